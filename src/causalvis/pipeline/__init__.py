"""The stages of ``causalvis build``, their registry per task, and the build driver.

Each stage lives in its own module and reads/writes the study folder through
``causalvis.store``; the numeric work is done by the pure cores in ``causalvis.stimuli``,
``causalvis.featurevis`` and ``causalvis.models``. This package imports nothing eagerly so
that one stage never pays for another's dependencies.
"""
