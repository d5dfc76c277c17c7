"""The bridges' former package, now :mod:`ctcbridge._bridges`.

Kept because PyTensor and Theano graphs pickled before the move name the Op
class ``ctcbridge._arrays.<library>.CTCBridgeOp``; its modules hand that class
on and hold nothing else.
"""
