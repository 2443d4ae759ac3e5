# The embedded demo: semantic segmentation of coloured shapes (antgo.data.datasets.demo.make_demo_voc),
# DDRKetNetF + SimpleHead at 128x128: 1.5-2.5 min on 2 CPU cores to val mIoU ~0.87 (docs/training.md).
# `make demo` (flows/train_flow.py) generates the data into data/demo_voc when it is missing; by hand:
#   python -m antgo.data.datasets.synthetic demo data/demo_voc
#   python -m antgo train configs/demo/demo_seg.py --work-dir work_dirs/demo_seg
# Relative paths resolve from the current working directory (run from the repository root).
_base_ = ['../_base_/default_runtime.py']

_data_dir = 'data/demo_voc'
_size = (128, 128)
_classes = ['background', 'circle', 'square', 'triangle', 'cross']
_mean = (0.485, 0.456, 0.406)
_std = (0.229, 0.224, 0.225)

model = dict(
    type='EncoderDecoder',
    backbone=dict(type='DDRKetNetF', in_channels=3),
    decode_head=dict(type='SimpleHead', in_channels=32, channels=32, out_channels=len(_classes), ignore_index=255),
)

optimizer = dict(type='AdamW', lr=3e-3, weight_decay=1e-4)
optimizer_config = dict(grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(policy='CosineAnnealing', min_lr=1e-5, by_epoch=False, warmup='linear', warmup_iters=20,
                 warmup_ratio=0.1)
max_epochs = 10

_test_pipeline = [
    dict(type='ResizeS', target_dim=_size),
    dict(type='ToTensor', keys=['image']),
    dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
    dict(type='UnSqueeze', axis=0, keys=['segments']),
]
_eval_split = dict(type='Pascal2012', train_or_test='val', dir=_data_dir,
                   ext_params=dict(task_type='SEGMENTATION', aug=False), pipeline=_test_pipeline,
                   inputs_def=dict(fields=['image', 'segments']))
_eval_loader = dict(samples_per_gpu=20, workers_per_gpu=0, drop_last=False, shuffle=False)

data = dict(
    train=dict(
        type='Pascal2012',
        train_or_test='train',
        dir=_data_dir,
        ext_params=dict(task_type='SEGMENTATION', aug=True),
        pipeline=[
            dict(type='ResizeS', target_dim=_size),
            dict(type='RandomFlipImage', swap_ids=[], swap_labels=[]),
            dict(type='ToTensor', keys=['image']),
            dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
            dict(type='UnSqueeze', axis=0, keys=['segments']),
        ],
        inputs_def=dict(fields=['image', 'segments']),
    ),
    train_dataloader=dict(samples_per_gpu=16, workers_per_gpu=0, drop_last=True, shuffle=True),
    val=_eval_split,
    val_dataloader=_eval_loader,
    test=_eval_split,
    test_dataloader=_eval_loader,
)

evaluation = dict(interval=1, metric=dict(type='SegMIOU', class_num=len(_classes), class_names=_classes),
                  save_best='miou', rule='greater')
log_config = dict(interval=5, hooks=[dict(type='TextLoggerHook')])
checkpoint_config = dict(interval=2, max_keep_ckpts=2)

export = dict(
    input_shape_list=[[1, 3, 128, 128]],
    input_name_list=['image'],
    output_name_list=['heatmap'],
)
