"""google-research/bert's AdamWeightDecay and its warmup + linear decay schedule, in Keras 3.

Per variable w with gradient g (after clipping all gradients to global norm 1.0):

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - lr * (m / (sqrt(v) + eps) + wd * w)      # no bias correction; wd * w skipped
                                                      # for LayerNorm weights and biases
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
from keras import ops

# Matched against the full variable path (`transformer_layer_0/attention_layer_norm/gamma`):
# Keras' own exclude_from_weight_decay matches short names only, which would decay LayerNorm.
NO_DECAY_PATTERNS = ("LayerNorm", "layer_norm", "bias")


def train_steps(num_examples: int, batch_size: int, epochs: float,
                warmup_proportion: float = 0.1) -> tuple[int, int]:
    """(num_train_steps, num_warmup_steps) exactly as run_classifier computes them.

    >>> train_steps(3668, 32, 3.0)
    (343, 34)
    """
    steps = int(num_examples / batch_size * epochs)
    return steps, int(steps * warmup_proportion)


@keras.saving.register_keras_serializable(package="bertflow")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr = peak * step / warmup while step < warmup, else peak * (1 - min(step, total) / total).

    As in google-research/bert, the decay is measured from step 0, not from the end of warmup,
    and the first update (step 0) has learning rate 0. With gradient accumulation Keras calls a
    schedule with micro-batches counted; `micro_batches` per update turns that into updates.
    """

    def __init__(self, peak_learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                 micro_batches: int = 1):
        self.peak_learning_rate = peak_learning_rate
        self.num_train_steps = num_train_steps
        self.num_warmup_steps = num_warmup_steps
        self.micro_batches = micro_batches

    def __call__(self, step):
        step = ops.cast(ops.floor_divide(step, self.micro_batches), "float32")
        peak = self.peak_learning_rate
        decayed = peak * (1.0 - ops.minimum(step, self.num_train_steps) / self.num_train_steps)
        if self.num_warmup_steps <= 0:
            return decayed
        warmup = peak * step / self.num_warmup_steps
        return ops.where(step < self.num_warmup_steps, warmup, decayed)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate,
                "num_train_steps": self.num_train_steps,
                "num_warmup_steps": self.num_warmup_steps, "micro_batches": self.micro_batches}


@keras.saving.register_keras_serializable(package="bertflow")
class AdamWeightDecay(keras.optimizers.Optimizer):
    """Adam with decoupled weight decay and without bias correction (google-research/bert)."""

    def __init__(self, learning_rate=2e-5, weight_decay_rate: float = 0.01, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-6,
                 exclude_from_weight_decay: Sequence[str] = NO_DECAY_PATTERNS,
                 global_clipnorm: float | None = 1.0, name: str = "adam_weight_decay", **kwargs):
        super().__init__(learning_rate=learning_rate, global_clipnorm=global_clipnorm, name=name,
                         **kwargs)
        self.weight_decay_rate = weight_decay_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.exclude_from_weight_decay = tuple(exclude_from_weight_decay)

    def decays(self, variable) -> bool:
        """Whether `variable` gets weight decay, judged by its full path."""
        path = getattr(variable, "path", variable.name)
        return self.weight_decay_rate > 0 and not any(
            re.search(pattern, path) for pattern in self.exclude_from_weight_decay)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])
        self._decay = [self.decays(var) for var in var_list]

    def slot_index(self, variable) -> int:
        """Position of `variable` in the list `build` got, which indexes its m, v and decay flag.

        Keras 3 has no public way to ask this: its own optimizers (Adam, SGD) and the custom
        optimizer example in `keras.optimizers.Optimizer`'s docstring call the private
        `_get_variable_index`, which also finds the variable under tf.distribute (the TensorFlow
        backend keys variables by their distributed container, not by id). pyproject pins the
        Keras minor versions this is tested on; tests/bert_core/test_optimizer.py fails first
        if the method disappears or changes meaning.
        """
        return self._get_variable_index(variable)

    def _clip_gradients(self, grads):
        """Clip to the global norm of the whole batch's gradient, on any number of devices.

        Under tf.distribute each replica holds the gradient of its share of the batch, and
        Keras clips before it sums them (in `_backend_update_step`): the norm would be each
        share's. So sum first (every replica then holds the batch's gradient), clip, and give
        each replica 1/n of it, which Keras' own sum adds back up. JAX's DataParallel computes
        the batch's gradient in one program: nothing to do there.
        """
        replicas = _tensorflow_replicas()
        if replicas == 1:
            return super()._clip_gradients(grads)
        import tensorflow as tf

        present = [i for i, g in enumerate(grads) if g is not None]
        summed = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
        clipped = super()._clip_gradients(summed)
        out = list(grads)
        for i, g in zip(present, clipped):
            out[i] = g / replicas
        return out

    def update_step(self, gradient, variable, learning_rate):
        index = self.slot_index(variable)
        m, v = self._m[index], self._v[index]
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.fused and keras.backend.backend() == "tensorflow":
            return self._fused_tensorflow_step(g, variable, m, v, lr, self._decay[index])
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * g)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * ops.square(g))
        update = m / (ops.sqrt(v) + self.epsilon)
        if self._decay[index]:
            update = update + self.weight_decay_rate * variable
        self.assign_sub(variable, lr * update)

    # The step above allocates a dozen full-size temporaries per variable, 47 MB each for the
    # word-embedding table, and on CPU that allocation and the passes over memory were a third of
    # a training profile. TensorFlow's fused Adam kernel updates w, m and v in place in one pass:
    #     m <- m + (g - m)(1 - b1);  v <- v + (g^2 - v)(1 - b2);  w <- w - lr_t m / (sqrt(v) + eps)
    # with lr_t = lr sqrt(1 - b2_power) / (1 - b1_power), which with both powers 0 is lr: the same
    # step without bias correction. The decay goes first, w <- w - lr wd w, which sums to BERT's
    # w - lr (m / (sqrt(v) + eps) + wd w). Equal to the step above up to float rounding.
    fused = True

    def _fused_tensorflow_step(self, g, variable, m, v, lr, decay: bool):
        import tensorflow as tf

        if decay:
            self.assign_sub(variable, (lr * self.weight_decay_rate) * variable)
        zero = tf.constant(0.0, variable.dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=zero, beta2_power=zero,
            lr=lr, beta1=tf.constant(self.beta_1, variable.dtype),
            beta2=tf.constant(self.beta_2, variable.dtype),
            epsilon=tf.constant(self.epsilon, variable.dtype), grad=tf.convert_to_tensor(g))

    def get_config(self):
        return {**super().get_config(), "weight_decay_rate": self.weight_decay_rate,
                "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "exclude_from_weight_decay": list(self.exclude_from_weight_decay)}


def _tensorflow_replicas() -> int:
    """Replicas summing gradients in this replica context (1 outside tf.distribute)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def create_optimizer(peak_learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                     micro_batches: int = 1) -> AdamWeightDecay:
    """run_classifier's optimizer: AdamWeightDecay on the warmup + linear decay schedule. With
    `micro_batches` > 1, Keras' gradient accumulation: one update per that many batches, with
    their mean gradient (clipped after averaging, as one large batch's would be)."""
    schedule = WarmupLinearDecay(peak_learning_rate, num_train_steps, num_warmup_steps,
                                 micro_batches)
    return AdamWeightDecay(learning_rate=schedule, gradient_accumulation_steps=(
        micro_batches if micro_batches > 1 else None))
