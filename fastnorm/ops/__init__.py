"""The op families behind ``fastnorm.functional``: one module per family, each validating its
arguments, asking ``fastnorm._dispatch`` for the active backend's kernels and listing its public
functions in ``__all__``. Import the ops from ``fastnorm.functional`` (or ``fastnorm``); these
module paths are an implementation detail.

- ``norm``: layer_norm, rms_norm
- ``batch``: batch_norm, instance_norm, group_norm, moments, merge_moments, fold_batch_norm
- ``local``: local_response_norm, lp_normalize, weight_norm, cosine_linear
- ``dropout``: dropout, gaussian_dropout, dropout_mask
- ``regularization``: L1/L2 penalties and their gradients, l1_prox_, grad_norm, clip_grad_norm_
- ``divergence``: entropy, kl_div, cross_entropy, js_div, js_distance, wasserstein_1d
- ``loss``: softmax, log_softmax, softmax_cross_entropy
- ``selection``: aic, bic, select_model
"""
