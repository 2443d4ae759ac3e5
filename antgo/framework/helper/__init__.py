"""Legacy namespace of the design document. Importing it registers every built-in component."""
import antgo.data  # noqa: F401  (registers datasets and transforms)
import antgo.metrics  # noqa: F401  (registers measures)
import antgo.models  # noqa: F401  (registers models)

from antgo.framework.helper import reader  # noqa: F401  (the document does `from antgo.framework.helper import reader`)
