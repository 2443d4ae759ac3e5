"""EncoderDecoder and ImageClassifier: the forward_train / forward_test / onnx_export contract."""
from __future__ import annotations

import torch

from antgo.models import build_model

SEG_CFG = dict(
    type="EncoderDecoder",
    backbone=dict(type="DDRKetNetF", in_channels=3),
    decode_head=dict(type="SimpleHead", in_channels=32, channels=32, out_channels=5, ignore_index=255),
)


def seg_batch(b: int = 2, size: int = 64, classes: int = 5):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(b, 3, size, size, generator=g)
    segments = torch.randint(0, classes, (b, 1, size, size), generator=g).to(torch.uint8)
    segments[:, :, :4] = 255
    return image, segments


def test_encoder_decoder_contract():
    model = build_model(SEG_CFG)
    image, segments = seg_batch()
    model.train()
    losses = model(image=image, segments=segments)
    assert set(losses) == {"loss_seg"} and losses["loss_seg"].dim() == 0
    model.eval()
    with torch.no_grad():
        out = model(image=image, segments=segments)  # ground truth passed along is ignored
        probs = model.onnx_export(image)
    assert set(out) == {"pred_segments"}
    assert out["pred_segments"].shape == (2, 64, 64) and out["pred_segments"].dtype == torch.int64
    assert probs.shape == (2, 5, 16, 16)
    assert torch.allclose(probs.sum(1), torch.ones(2, 16, 16), atol=1e-5)


def test_encoder_decoder_export_upsample_option():
    model = build_model(dict(SEG_CFG, test_cfg=dict(export_upsample=True))).eval()
    with torch.no_grad():
        assert model.onnx_export(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)


def test_ddrnet_segmentor_losses():
    model = build_model(dict(type="EncoderDecoder", backbone=dict(type="DDRNet23Slim"),
                             decode_head=dict(type="DDRHead", out_channels=5, ignore_index=255)))
    image, segments = seg_batch()
    losses = model.train()(image=image, segments=segments)
    assert set(losses) == {"loss_seg", "loss_seg_aux"}
    with torch.no_grad():
        assert model.eval()(image=image)["pred_segments"].shape == (2, 64, 64)


def _sgd_losses(model, steps: int, **batch) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    history = []
    for _ in range(steps):
        loss = sum(v for k, v in model(**batch).items() if "loss" in k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def test_sgd_steps_lower_segmentation_loss():
    torch.manual_seed(0)
    model = build_model(SEG_CFG)
    image, _ = seg_batch(b=2, size=32)
    # a learnable target: the class is a smooth function of the image
    segments = (torch.nn.functional.avg_pool2d(image[:, :1], 9, 1, 4) > 0).to(torch.uint8)
    segments[:, :, :2] = 255
    history = _sgd_losses(model, 10, image=image, segments=segments)
    assert history[-1] < history[0] * 0.8


CLS_CFG = dict(type="ImageClassifier", backbone=dict(type="SimpleConvNet", channels=(8, 16, 32)),
               head=dict(type="LinearClsHead", in_channels=32, num_classes=4))


def test_classifier_train_and_test():
    torch.manual_seed(0)
    model = build_model(CLS_CFG)
    image = torch.randn(8, 3, 32, 32)
    label = torch.arange(8) % 4
    history = _sgd_losses(model, 10, image=image, label=label)
    assert history[-1] < history[0]
    out = model.train()(image=image, label=label)
    assert set(out) == {"loss_cls", "acc"}
    model.eval()
    with torch.no_grad():
        pred = model(image=image)["pred"]
        exported = model.onnx_export(image)
    assert pred.shape == (8, 4) and torch.allclose(pred.sum(1), torch.ones(8), atol=1e-5)
    assert torch.allclose(pred, exported)
