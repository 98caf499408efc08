"""Evaluation of frozen or fine-tuned encoders, one module per protocol.

* `features`: images -> frozen features (the one extraction path) and the probes' input checks.
* `linear_probe`: the L-BFGS logistic-regression sweep (Kornblith et al. 2019).
* `linear_classifier`: the paper's stage 2, a linear layer trained with SGD on a frozen encoder.
* `knn`: cosine kNN classification.
* `few_shot`: logistic regression on a few labelled examples per class.
* `finetune`: fine-tuning with a fresh linear classifier, and its grid search.
* `transfer`: the 12-dataset transfer registry and the protocol run on one benchmark.
* `metrics`: top-k, mean per-class accuracy, 11-point mAP.
* `retrieval`: Precision@1, R-precision, MAP@R and Recall@k of cosine retrieval.
"""

from supcon_tf.evaluation import features
from supcon_tf.evaluation import few_shot
from supcon_tf.evaluation import finetune
from supcon_tf.evaluation import knn
from supcon_tf.evaluation import linear_classifier
from supcon_tf.evaluation import linear_probe
from supcon_tf.evaluation import metrics
from supcon_tf.evaluation import retrieval
from supcon_tf.evaluation import transfer
