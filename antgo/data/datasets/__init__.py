"""Built-in datasets (registered in ``DATASETS`` on import) and synthetic VOC-layout generators."""
from antgo.data.datasets.demo import DEMO_CLASS_NAMES, make_demo_voc
from antgo.data.datasets.pascal_voc import VOC_CLASS_NAMES, Pascal2012
from antgo.data.datasets.synthetic import make_voc_tree

__all__ = ["Pascal2012", "VOC_CLASS_NAMES", "make_voc_tree", "make_demo_voc", "DEMO_CLASS_NAMES"]
