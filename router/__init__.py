"""The router stage: decide per question whether the cheap student can answer it or the teacher is needed.

``router.labels`` labels questions from paired teacher/student records, ``router.features`` turns a question
(and its retrieval scores) into features, ``router.fit`` fits a calibrated classifier from the ``router.models``
registry and picks its threshold, ``router.persist`` saves and safely loads it (skops), ``router.evaluate``
reports RouteLLM's metrics against baselines, and ``router.hardset`` exports the curriculum of hard questions.
"""
