"""Each native's own arithmetic where it departs from the exact CTC loss, in one
module per native: the signatures apply it to their results, and their
conformance rows to the reference's."""
