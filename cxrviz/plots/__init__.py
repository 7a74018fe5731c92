"""Every figure of cxrviz: one style (plots.style), one module per subject."""
