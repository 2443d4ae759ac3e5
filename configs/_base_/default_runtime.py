# Runtime defaults shared by the antgo configs: logging, checkpoints, seeding, precision.
log_config = dict(
    interval=10,
    hooks=[
        dict(type='TextLoggerHook'),
    ])
# epoch_N.pth every `interval` epochs (and after the last one), latest.pth, and only the newest
# `max_keep_ckpts` epoch files. out_dir=None writes into the run's work_dir.
checkpoint_config = dict(interval=1, max_keep_ckpts=3)
seed = 0
deterministic = False
# bf16 autocast on CUDA (ignored with a warning on CPU); channels_last memory format on GPU.
amp = False
channels_last = False
custom_hooks = []
