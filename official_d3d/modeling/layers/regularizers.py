"""Weight decay as TF-slim's networks define it, so that penalties match the reference's."""

import keras


def slim_l2(weight_decay: float):
  """TF-slim's `l2_regularizer(s)`, adding s * sum(w^2) / 2, as Keras' L2(l), adding l * sum(w^2); None for 0."""
  return keras.regularizers.L2(weight_decay / 2) if weight_decay else None
