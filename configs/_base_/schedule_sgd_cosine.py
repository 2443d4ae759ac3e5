# SGD + per-iteration warmup + cosine annealing (the design document's schedule).
optimizer = dict(type='SGD', lr=0.05, weight_decay=5e-4, momentum=0.9, nesterov=True)
optimizer_config = dict(grad_clip=None)
lr_config = dict(
    policy='CosineAnnealing',
    min_lr=1e-5,
    warmup_by_epoch=False,
    warmup_iters=2000,
    warmup='linear'
)
max_epochs = 600
