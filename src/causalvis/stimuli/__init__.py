"""Stimulus generation: dataset scan, units, exemplars, blur, occlusion, trials, references.

Each stage lives in its own module (see ``causalvis.study.build.STAGES``); this package
imports nothing eagerly so that one stage never pays for another's dependencies.
"""
