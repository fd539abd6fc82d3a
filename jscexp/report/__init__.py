"""The lab, regenerated (``make lab``): the lab-1 and lab-2 experiments as sweeps, and one
report of them built from MLflow (``python -m jscexp.report``)."""
