"""torch kernels: custom autograd Functions where plain torch ops would waste memory."""
