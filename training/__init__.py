"""TensorFlow side: what runs inside an executor process (`process`); the coordinator imports none of it.

The three executors are siblings over one trial core (`core`): `reference` (Keras's `model.fit`), `compiled` (one
compiled function per epoch) and `fused` (a fuse group in one graph), each `train_batch(tasks, data, on_epoch)`;
`optimizers` holds the update rules and penalty the compiled and the fused share. The model (`model`, `parts`, `cnn`,
`builder`, `heads`), its inputs (`inputs`), schedule (`steps`), `complexity` and `artifacts` are common to all.
"""
