"""Built-in datasets (registered in ``DATASETS`` on import) and synthetic data generators."""
from antgo.data.datasets.demo import DEMO_CLASS_NAMES, make_demo_voc
from antgo.data.datasets.pascal_voc import VOC_CLASS_NAMES, Pascal2012
from antgo.data.datasets.pascal_voc_det import Pascal2012Detection
from antgo.data.datasets.coco import COCO2017
from antgo.data.datasets.image_folder import ImageFolder
from antgo.data.datasets.synthetic import make_voc_tree

__all__ = ["Pascal2012", "Pascal2012Detection", "COCO2017", "ImageFolder", "VOC_CLASS_NAMES", "make_voc_tree",
           "make_demo_voc", "DEMO_CLASS_NAMES"]
