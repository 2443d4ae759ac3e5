# The embedded classification demo: one shape per image in an ImageFolder tree
# (antgo.data.datasets.synthetic_tasks.make_demo_cls: 400 train / 100 val, 4 classes),
# ImageClassifier (SimpleConvNet + LinearClsHead) at 96x96. Metric and time: docs/tasks.md.
# `make demo TASK=cls` generates the data into data/demo_cls when it is missing.
_base_ = ['../_base_/default_runtime.py', '../_base_/demo_schedule.py']

_data_dir = 'data/demo_cls'
_size = (96, 96)
_classes = ['circle', 'square', 'triangle', 'cross']
_mean = (0.485, 0.456, 0.406)
_std = (0.229, 0.224, 0.225)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='SimpleConvNet', in_channels=3, channels=(16, 32, 64, 96)),
    head=dict(type='LinearClsHead', in_channels=96, num_classes=len(_classes)),
)

max_epochs = 10

_test_pipeline = [
    dict(type='ResizeS', target_dim=_size),
    dict(type='ToTensor', keys=['image']),
    dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
]
_eval_split = dict(type='ImageFolder', train_or_test='val', dir=_data_dir, pipeline=_test_pipeline,
                   inputs_def=dict(fields=['image', 'label']))
_eval_loader = dict(samples_per_gpu=50, workers_per_gpu=0, drop_last=False, shuffle=False)

data = dict(
    train=dict(
        type='ImageFolder',
        train_or_test='train',
        dir=_data_dir,
        pipeline=[
            dict(type='ResizeS', target_dim=_size),
            dict(type='RandomFlipImage', swap_ids=[], swap_labels=[]),
            dict(type='ToTensor', keys=['image']),
            dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
        ],
        inputs_def=dict(fields=['image', 'label']),
    ),
    train_dataloader=dict(samples_per_gpu=16, workers_per_gpu=0, drop_last=True, shuffle=True),
    val=_eval_split,
    val_dataloader=_eval_loader,
    test=_eval_split,
    test_dataloader=_eval_loader,
)

evaluation = dict(interval=1, metric=dict(type='Accuracy', topk=(1, 2)), save_best='top1', rule='greater')
log_config = dict(interval=5, hooks=[dict(type='TextLoggerHook')])
checkpoint_config = dict(interval=2, max_keep_ckpts=2)

export = dict(
    input_shape_list=[[1, 3, 96, 96]],
    input_name_list=['image'],
    output_name_list=['probs'],
    metadata=dict(class_names=_classes),  # the ImageFolder classes (sorted folder names), for `antgo predict`
)
