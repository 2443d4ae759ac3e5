# The embedded detection demo: coloured shapes with boxes in COCO layout
# (antgo.data.datasets.synthetic_tasks.make_demo_det: 300 train / 100 val images, 4 classes),
# CenterNet on DDRKetNetF at 128x128. Metric and time on 2 CPU cores: docs/tasks.md.
# `make demo TASK=det` (flows/train_flow.py) generates the data into data/demo_det when it is missing.
_base_ = ['../_base_/default_runtime.py', '../_base_/demo_schedule.py']

_data_dir = 'data/demo_det'
_size = (128, 128)
_classes = ['circle', 'square', 'triangle', 'cross']
_mean = (0.485, 0.456, 0.406)
_std = (0.229, 0.224, 0.225)

model = dict(
    type='CenterNet',
    backbone=dict(type='DDRKetNetF', in_channels=3),
    head=dict(type='CenterNetHead', in_channels=32, num_classes=len(_classes), channels=64),
    test_cfg=dict(topk=100, score_thr=0.05, nms_iou=0.6, max_per_img=100),
)

max_epochs = 8

_test_pipeline = [
    dict(type='ResizeS', target_dim=_size),
    dict(type='ToTensor', keys=['image']),
    dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
]
_eval_split = dict(type='COCO2017', train_or_test='val', dir=_data_dir, ext_params=dict(task_type='DETECTION'),
                   pipeline=_test_pipeline, inputs_def=dict(fields=['image', 'bboxes', 'labels', 'iscrowd', 'areas']))
_eval_loader = dict(samples_per_gpu=20, workers_per_gpu=0, drop_last=False, shuffle=False)

data = dict(
    train=dict(
        type='COCO2017',
        train_or_test='train',
        dir=_data_dir,
        ext_params=dict(task_type='DETECTION'),
        pipeline=[
            dict(type='ResizeS', target_dim=_size),
            dict(type='RandomFlipImage', swap_ids=[], swap_labels=[]),
            dict(type='ToTensor', keys=['image']),
            dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
        ],
        inputs_def=dict(fields=['image', 'bboxes', 'labels']),
    ),
    train_dataloader=dict(samples_per_gpu=16, workers_per_gpu=0, drop_last=True, shuffle=True),
    val=_eval_split,
    val_dataloader=_eval_loader,
    test=_eval_split,
    test_dataloader=_eval_loader,
)

evaluation = dict(interval=2, metric=dict(type='DetMAP', class_num=len(_classes), class_names=_classes,
                                          ignore_key='iscrowd', area_key='areas'),
                  save_best='mAP_50', rule='greater')
log_config = dict(interval=5, hooks=[dict(type='TextLoggerHook')])
checkpoint_config = dict(interval=4, max_keep_ckpts=2)

export = dict(
    input_shape_list=[[1, 3, 128, 128]],
    input_name_list=['image'],
    output_name_list=['heatmap', 'wh', 'offset'],
)
