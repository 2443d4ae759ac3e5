# Optimiser and LR schedule shared by the embedded task demos (configs/demo/demo_{det,kp,cls}.py).
optimizer = dict(type='AdamW', lr=3e-3, weight_decay=1e-4)
optimizer_config = dict(grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(policy='CosineAnnealing', min_lr=1e-5, by_epoch=False, warmup='linear', warmup_iters=20,
                 warmup_ratio=0.1)
