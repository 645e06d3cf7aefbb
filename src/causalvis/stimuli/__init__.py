"""Pure numeric cores of stimulus generation: occlusion sweeps (plain, incremental, and the
engine choice in ``sweep``), the trial rule, unit sampling, exemplar plans, the blurred
references' window search, session plans, catch/practice selection and heatmaps. Arrays
in, arrays out: the stages that read and write the study folder are in
``causalvis.pipeline``.
"""
