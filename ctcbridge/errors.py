"""The exceptions ctcbridge raises.

Every exception derives from :class:`CTCError`, so ``except ctcbridge.CTCError``
catches anything the package raises on purpose.  Invalid input also derives
from the matching builtin (``ValueError``, ``TypeError``), so code written for
a framework's own CTC keeps working.
"""

from __future__ import annotations


class CTCError(Exception):
    """Base class of every ctcbridge error."""


class CTCValueError(CTCError, ValueError):
    """An argument has an invalid value (out-of-range label, bad length...)."""


class CTCTypeError(CTCError, TypeError):
    """An argument has an unsupported type or dtype."""


class EngineError(CTCError, RuntimeError):
    """The C engine failed for a reason other than invalid input (memory...)."""


class EngineMemoryError(EngineError, MemoryError):
    """The engine could not allocate its working memory."""


class EngineLoadError(CTCError, ImportError):
    """The compiled engine library could not be found or loaded."""


class CTCRuntimeError(CTCValueError, RuntimeError):
    """Invalid input, raised as a ``RuntimeError`` too: the type PyTorch's CTC raises."""


class CTCAssertionError(CTCValueError, AssertionError):
    """Invalid input where the native asserts (Gluon's constructor checks)."""


class GradientNotComputedError(CTCError, RuntimeError):
    """The loss was computed without its gradient (the activations did not require one,
    or backpropagation was off), and then differentiated."""


class CTCGradientError(CTCError, AssertionError):
    """Differentiating a ``compute_grad=False`` Op (Theano asserts, an AssertionError)."""


# --- Chainer's types: the signature keeps the exception types Chainer raises


class ChainerIndexError(CTCValueError, IndexError):
    """A label outside [-V, V): the ``IndexError`` Chainer's indexing raises."""


class ChainerAssertionError(CTCAssertionError):
    """What Chainer asserts (blank range, 2-D frames, lengths in debug mode)."""


_chainer_invalid_type = None


def chainer_invalid_type(msg: str, expect: str, actual: str) -> CTCTypeError:
    """Chainer's ``InvalidType`` (``chainer.utils.type_check``) with `msg`, when chainer
    is imported; a :class:`CTCTypeError` with the same message otherwise.

    The class derives from Chainer's own, so it can only be made once chainer is
    imported; it is made here, on first use, and kept."""
    import sys

    global _chainer_invalid_type
    if "chainer" not in sys.modules:
        return CTCTypeError(msg)
    if _chainer_invalid_type is None:
        from chainer.utils.type_check import InvalidType

        class ChainerInvalidType(CTCTypeError, InvalidType):
            def __init__(self, msg, expect=None, actual=None):
                Exception.__init__(self, msg)
                self.expect, self.actual = expect, actual

            def __reduce__(self):
                return type(self), (self.args[0], self.expect, self.actual)

        ChainerInvalidType.__module__ = __name__
        _chainer_invalid_type = ChainerInvalidType
    return _chainer_invalid_type(msg, expect, actual)


class CTCSecondDerivativeError(CTCError, NotImplementedError):
    """A second derivative of the loss was asked for (the Hessian, jvp of grad): the
    engine gives the exact first derivative only, and ctcbridge refuses rather than
    return a detached or wrong one."""


class CTCNoSecondGradientError(CTCSecondDerivativeError, LookupError):
    """The TensorFlow form of :class:`CTCSecondDerivativeError`: also a
    ``LookupError``, what TensorFlow raises for an op whose gradient has no
    registered gradient ("gradient registry has no entry for ...")."""


# --- TensorFlow's type: TF's CTC ops raise tf.errors.InvalidArgumentError, eagerly and
# in graphs


_tf_invalid_argument = None


def tf_invalid_argument(msg: str) -> CTCValueError:
    """``CTCInvalidArgumentError(msg)`` when tensorflow is imported: a
    :class:`CTCValueError` that is also TensorFlow's ``tf.errors.InvalidArgumentError``,
    the type TF's and Keras' CTC raise for invalid values, eagerly and inside
    ``tf.function``; a plain :class:`CTCValueError` otherwise.

    The class derives from TF's own, so it can only be made once tensorflow is
    imported (``import ctcbridge`` does not import it); it is made here, on first
    use, and kept."""
    import sys

    global _tf_invalid_argument
    if "tensorflow" not in sys.modules:
        return CTCValueError(msg)
    if _tf_invalid_argument is None:
        from tensorflow import errors as tf_errors

        class CTCInvalidArgumentError(CTCValueError, tf_errors.InvalidArgumentError):
            # TF's own signature (node_def, op, message): AutoGraph rebuilds an OpError
            # raised while tracing with it, keeping the type
            def __init__(self, node_def, op, message, *args):
                tf_errors.InvalidArgumentError.__init__(self, node_def, op, message, *args)

            def __reduce__(self):  # the class is made at run time: pickle the maker
                return tf_invalid_argument, (self.message,)

        CTCInvalidArgumentError.__module__ = __name__
        CTCInvalidArgumentError.__qualname__ = "CTCInvalidArgumentError"
        _tf_invalid_argument = CTCInvalidArgumentError
    return _tf_invalid_argument(None, None, msg)


class CTCCompileError(CTCError, NotImplementedError):
    """A compiled route the engine cannot take, raised when the program is traced
    (``tf.function(jit_compile=True)`` placed on a GPU: the engine runs on the CPU)."""


class CTCNotImplementedError(CTCRuntimeError, NotImplementedError):
    """A dtype the native has no kernel for (torch's ctc_loss on bfloat16 or float16
    outside autocast raises ``NotImplementedError``)."""
