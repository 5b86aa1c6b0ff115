"""Real-time pieces every engine shares, each written once.

``ring`` (lock-free hand-over of records to a native callback), ``controls``
(state writes addressed by layout), ``notes`` (sounding-note tracking and
release) and ``output`` (sanitise and clip). All of it is numba code that
never allocates, locks, logs or takes the GIL on the real-time side.
"""
