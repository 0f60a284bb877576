"""The protocols: the only code that knows FastAPI, pydantic bodies or protobuf.

`http/` serves /v1 and the web page, `oip/` the Open Inference Protocol over REST and gRPC,
`auth.py` checks API keys for every transport. Each turns a request into a call on `serving/`
and its answer back into bytes.
"""
