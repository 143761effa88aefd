"""The optional gRPC client (grpcio, hand-encoded messages) against a real sidecar."""
import time

import pytest

from sam_sidecar import wire

grpc = pytest.importorskip("grpc")

from sam_sidecar.grpc_client import GrpcStepClient, encode_step_request  # noqa: E402

PROMPT = [100, 101, 102, 103]


def test_step_over_grpc_returns_the_same_drafts_and_coded_errors(sidecar):
    client = GrpcStepClient(f"unix:{sidecar.socket}.grpc", deadline_s=5.0)
    engine = f"grpc-{time.monotonic_ns()}"
    reply = client.step(encode_step_request(engine, 1, 2, False, 3, [("a", 0, PROMPT + [1, 2, 3, 1, 2], 4), ("b", 0, PROMPT + [7], 4)]))
    assert reply.speculate and reply.reason == "below_threshold"
    assert reply.draft_lists() == [[3, 1, 2], []]
    delta = client.step(encode_step_request(engine, 2, 1, False, 3, [("a", 9, [3], None), ("ghost", 5, [1], None)]))
    assert delta.statuses.tolist() == [wire.STATUS_OK, wire.STATUS_RESYNC]
    assert delta.errors[0]["code"] == "UNKNOWN_REQUEST"
    with pytest.raises(wire.WireError) as error:
        client.step(encode_step_request(engine, 3, 1, False, 99, []))
    assert error.value.code == "K_OUT_OF_RANGE" and error.value.field == "k"
    client.close()
