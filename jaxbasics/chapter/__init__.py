"""The chapter itself, section by section: tensors (:mod:`.tensors`), automatic
differentiation on one neuron (:mod:`.neuron`) checked by finite differences
(:mod:`.finite_diff`), backpropagation in SimpleNet (:mod:`.simplenet`) and its functional
training step (:mod:`.train_step`)."""
