# The embedded keypoint demo: one "house" per image whose 5 corners are the keypoints, among distractor shapes
# that may hide a corner (antgo.data.datasets.synthetic_tasks.make_demo_kp, COCO keypoints layout),
# HeatmapPose (DDRKetNetF + HeatmapHead, heat maps at 1/2) at 96x96. Metric and time: docs/tasks.md.
# `make demo TASK=kp` generates the data into data/demo_kp when it is missing.
_base_ = ['../_base_/default_runtime.py', '../_base_/demo_schedule.py']

_data_dir = 'data/demo_kp'
_size = (96, 96)
_num_joints = 5
_flip_pairs = [[1, 3], [2, 4]]  # [left ids, right ids]: eaves and base corners trade places on a flip
_mean = (0.485, 0.456, 0.406)
_std = (0.229, 0.224, 0.225)

model = dict(
    type='HeatmapPose',
    backbone=dict(type='DDRKetNetF', in_channels=3),
    head=dict(type='HeatmapHead', in_channels=32, num_joints=_num_joints, channels=32, num_deconv=1, sigma=1.5),
)

max_epochs = 12

_test_pipeline = [
    dict(type='ResizeS', target_dim=_size),
    dict(type='ToTensor', keys=['image']),
    dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
]
_eval_split = dict(type='COCO2017', train_or_test='val', dir=_data_dir, ext_params=dict(task_type='KEYPOINTS'),
                   pipeline=_test_pipeline, inputs_def=dict(fields=['image', 'joints2d', 'bboxes', 'areas']))
_eval_loader = dict(samples_per_gpu=20, workers_per_gpu=0, drop_last=False, shuffle=False)

data = dict(
    train=dict(
        type='COCO2017',
        train_or_test='train',
        dir=_data_dir,
        ext_params=dict(task_type='KEYPOINTS'),
        pipeline=[
            dict(type='ResizeS', target_dim=_size),
            dict(type='RandomFlipImage', swap_ids=_flip_pairs, swap_labels=[]),
            dict(type='ToTensor', keys=['image']),
            dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
        ],
        inputs_def=dict(fields=['image', 'joints2d']),
    ),
    train_dataloader=dict(samples_per_gpu=16, workers_per_gpu=0, drop_last=True, shuffle=True),
    val=_eval_split,
    val_dataloader=_eval_loader,
    test=_eval_split,
    test_dataloader=_eval_loader,
)

# PCK@0.1: a corner within 10% of the house's box side; KeypointAP: COCO OKS AP (sigma 0.05 per corner,
# object scale = the annotated area, as COCO)
evaluation = dict(interval=2, metric=[dict(type='PCK', thr=0.1), dict(type='KeypointAP', area_key='areas')],
                  save_best='pck', rule='greater')
log_config = dict(interval=5, hooks=[dict(type='TextLoggerHook')])
checkpoint_config = dict(interval=4, max_keep_ckpts=2)

export = dict(
    input_shape_list=[[1, 3, 96, 96]],
    input_name_list=['image'],
    output_name_list=['heatmap'],
    # written into the ONNX metadata so `antgo predict --onnx` names the corners and draws the house
    # (antgo.data.datasets.synthetic_tasks.KEYPOINT_NAMES / SKELETON, 1-based edges as in COCO)
    metadata=dict(keypoint_names=['roof', 'left_eave', 'right_eave', 'left_base', 'right_base'],
                  skeleton=[[1, 2], [1, 3], [2, 4], [3, 5], [4, 5]]),
)
