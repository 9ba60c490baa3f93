"""The measures of a closed-loop run, one module per kind, named for what they measure:

- `real_text`: the model on the fixed real val text (`val/*`);
- `sample_text`: the text of the samples alone, no model (`samples/*` word and character statistics);
- `model_on_samples`: models scoring the samples (`samples/ref_bpc`, `samples/self_bpc`);
- `truth`: the ground truth of the synthetic language (`truth/*`);
- `registry`: every key's unit and description, declared where it is computed.

Importing this package registers every measure. Tests: `python -m pytest tests/test_measures.py
tests/test_metrics.py tests/test_evaluate.py tests/test_truth.py`.
"""
from training.measures import model_on_samples, real_text, sample_text, truth  # noqa: F401 (registers the keys)
from training.measures.registry import MEASURES, describe, diversity_keys, main_keys  # noqa: F401
