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


def test_the_session_can_talk_grpc_instead_of_the_fast_lane(sidecar, monkeypatch):
    import numpy as np

    from sam_sidecar.proposer import client_from_env
    from sam_sidecar.session import DraftSession

    monkeypatch.setenv("SAM_SIDECAR_GRPC_TARGET", f"unix:{sidecar.socket}.grpc")
    monkeypatch.setenv("SAM_SIDECAR_DEADLINE_MS", "2000")
    client = client_from_env()
    assert isinstance(client, GrpcStepClient)
    session = DraftSession(3, client, engine_id=f"grpc-session-{time.monotonic_ns()}")
    rows = np.zeros((2, 32), dtype=np.int32)
    rows[0, :9] = PROMPT + [1, 2, 3, 1, 2]
    result = session.step(["a"], rows, np.array([9]), np.array([4]), 1)
    assert (result.source, result.drafts) == ("sidecar", [[3, 1, 2]])
    rows[0, 9] = 3
    assert session.step(["a"], rows, np.array([10]), np.array([4]), 1).drafts == [[1, 2, 3]]
    assert client.fast_lane  # the session's steps went as fast-lane frames
    client.close()


def test_a_sidecar_without_the_fast_lane_call_gets_typed_steps(sidecar):
    import numpy as np

    from sam_sidecar.session import DraftSession

    class Unimplemented(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNIMPLEMENTED

    def refuse(*args, **kwargs):
        raise Unimplemented()

    client = GrpcStepClient(f"unix:{sidecar.socket}.grpc", deadline_s=2.0)
    client._methods()
    client._fast_lane = refuse  # what an older sidecar answers
    session = DraftSession(3, client, engine_id=f"grpc-typed-{time.monotonic_ns()}")
    rows = np.zeros((1, 32), dtype=np.int32)
    rows[0, :9] = PROMPT + [1, 2, 3, 1, 2]
    assert session.step(["a"], rows, np.array([9]), np.array([4]), 1).drafts == [[3, 1, 2]]
    assert not client.fast_lane
    client.close()
