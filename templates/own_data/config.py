# Your own segmentation data with antgo: copy this folder, point `_data_dir` at your data, set `_classes`.
#   python make_example_data.py data               # (only to try the template: writes a tiny example set)
#   python -m antgo train config.py --work-dir work
#   python -m antgo export config.py --work-dir work
#   python -m antgo predict --onnx work/config.onnx data/images --out-dir predictions
# Run from this folder (`python -m` puts it on the import path, so custom_imports finds my_dataset.py).
custom_imports = dict(imports=['my_dataset'])

_data_dir = 'data'
_classes = ['background', 'disc', 'box']
_size = (64, 64)          # network input (w, h); use e.g. (512, 512) for real images
_mean = (0.485, 0.456, 0.406)
_std = (0.229, 0.224, 0.225)

model = dict(
    type='EncoderDecoder',
    # a small net that trains in seconds on a CPU; for real data: backbone=dict(type='DDRKetNetF', in_channels=3)
    # with decode_head in_channels=32 (see `python -m antgo list models`)
    backbone=dict(type='SimpleConvNet', in_channels=3, channels=(16, 32)),
    decode_head=dict(type='SimpleHead', in_channels=32, channels=16, out_channels=len(_classes), ignore_index=255),
)
optimizer = dict(type='AdamW', lr=3e-3, weight_decay=1e-4)
optimizer_config = dict(grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(policy='CosineAnnealing', min_lr=1e-5, by_epoch=False, warmup=None)
max_epochs = 20

_eval_pipeline = [
    dict(type='ResizeS', target_dim=_size),
    dict(type='ToTensor', keys=['image']),
    dict(type='Normalize', mean=_mean, std=_std, keys=['image']),
    dict(type='UnSqueeze', axis=0, keys=['segments']),
]
_split = lambda name, pipeline: dict(type='FolderSegmentation', train_or_test=name, dir=_data_dir,  # noqa: E731
                                     ext_params=dict(classes=_classes), pipeline=pipeline,
                                     inputs_def=dict(fields=['image', 'segments']))
_loader = dict(samples_per_gpu=8, workers_per_gpu=0, drop_last=False, shuffle=False)
data = dict(
    train=_split('train', [dict(type='ResizeS', target_dim=_size), dict(type='RandomFlipImage', swap_ids=[],
                                                                          swap_labels=[]), *_eval_pipeline[1:]]),
    train_dataloader=dict(_loader, shuffle=True),
    val=_split('val', _eval_pipeline),
    val_dataloader=_loader,
    test=_split('val', _eval_pipeline),
    test_dataloader=_loader,
)

evaluation = dict(interval=1, metric=dict(type='SegMIOU', class_num=len(_classes), class_names=_classes),
                  save_best='miou', rule='greater')
checkpoint_config = dict(interval=5, max_keep_ckpts=2)
log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
custom_hooks = [dict(type='EarlyStoppingHook', patience=5)]  # stop when val miou stalls for 5 epochs

mlflow = dict(registered_model_name='my-segmenter')  # the pipeline registers each exported version under this name
export = dict(input_shape_list=[[1, 3, _size[1], _size[0]]], input_name_list=['image'],
              output_name_list=['heatmap'])
