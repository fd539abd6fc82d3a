__version__ = "0.1.0"

from omegaconf import OmegaConf

# Config arithmetic for sweeps, e.g. weight_frac_width: ${sub:${quantisation.weight_width},1}
if not OmegaConf.has_resolver("sub"):
    OmegaConf.register_new_resolver("sub", lambda a, b: int(a) - int(b))
