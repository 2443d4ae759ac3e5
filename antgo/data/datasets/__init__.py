"""Built-in datasets (registered in ``DATASETS`` on import) and synthetic data generators."""
from antgo.data.datasets.demo import DEMO_CLASS_NAMES, make_demo_voc
from antgo.data.datasets.pascal_voc import VOC_CLASS_NAMES, Pascal2012
from antgo.data.datasets.pascal_voc_det import Pascal2012Detection
from antgo.data.datasets.coco import COCO2017
from antgo.data.datasets.image_folder import ImageFolder

__all__ = ["Pascal2012", "Pascal2012Detection", "COCO2017", "ImageFolder", "VOC_CLASS_NAMES", "make_voc_tree",
           "make_demo_voc", "DEMO_CLASS_NAMES"]


def __getattr__(name: str):  # noqa: ANN202
    # imported on first use: `python -m antgo.data.datasets.synthetic` must find it not yet imported (runpy warns)
    if name == "make_voc_tree":
        from antgo.data.datasets.synthetic import make_voc_tree

        return make_voc_tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
