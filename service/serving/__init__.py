"""The protocol-neutral request flow: admission, decoding, inference, shadow, explanations,
and `ServiceState`, the one object that holds what a running server has."""
