"""Pure numeric cores of stimulus generation: occlusion sweeps (plain and incremental), the
trial rule, session plans, catch/practice selection and heatmaps. Arrays in, arrays out:
the stages that read and write the study folder are in ``causalvis.pipeline``.
"""
