/**
 * gRPC service definitions for @grpc/grpc-js, with protobufjs doing the (de)serialization of the
 * messages in proto/. Shared by the server and the Node client.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { join } from 'node:path';
import { packageRoot } from '../package-root.js';

export const PROTO_DIR = join(packageRoot(), 'proto') + '/';

const root = new protobuf.Root().loadSync([`${PROTO_DIR}sam_sidecar.proto`, `${PROTO_DIR}grpc/health/v1/health.proto`], { keepCase: true });

/**
 * A request whose bytes are not a message of its type. Handed to the handler in place of the
 * message (a deserializer that throws makes grpc-js answer INTERNAL with no code), which answers
 * it with a coded MALFORMED_MESSAGE.
 */
export class UndecodableMessage {
  constructor(
    readonly type: string,
    readonly reason: string,
  ) {}
}

function method<Req, Res>(path: string, requestType: string, responseType: string, responseStream = false) {
  const request = root.lookupType(requestType);
  const response = root.lookupType(responseType);
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: (value: Req) => Buffer.from(request.encode(request.fromObject(value as object)).finish()),
    requestDeserialize: (bytes: Buffer) => {
      try {
        return request.decode(bytes) as unknown as Req;
      } catch (error) {
        return new UndecodableMessage(requestType, (error as Error).message) as unknown as Req;
      }
    },
    responseSerialize: (value: Res) => Buffer.from(response.encode(response.fromObject(value as object)).finish()),
    responseDeserialize: (bytes: Buffer) => response.decode(bytes) as unknown as Res,
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

export const SidecarService: ServiceDefinition<Any> = {
  Step: method<Any, Any>('/sam_sidecar.v1.Sidecar/Step', 'sam_sidecar.v1.StepRequest', 'sam_sidecar.v1.StepResponse'),
  Release: method<Any, Any>('/sam_sidecar.v1.Sidecar/Release', 'sam_sidecar.v1.ReleaseRequest', 'sam_sidecar.v1.ReleaseResponse'),
  Stats: method<Any, Any>('/sam_sidecar.v1.Sidecar/Stats', 'sam_sidecar.v1.StatsRequest', 'sam_sidecar.v1.StatsResponse'),
  FastLane: method<Any, Any>('/sam_sidecar.v1.Sidecar/FastLane', 'sam_sidecar.v1.Frame', 'sam_sidecar.v1.Frame'),
};

export const HealthService: ServiceDefinition<Any> = {
  Check: method<Any, Any>('/grpc.health.v1.Health/Check', 'grpc.health.v1.HealthCheckRequest', 'grpc.health.v1.HealthCheckResponse'),
  Watch: method<Any, Any>('/grpc.health.v1.Health/Watch', 'grpc.health.v1.HealthCheckRequest', 'grpc.health.v1.HealthCheckResponse', true),
};

export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
/** Health service names answered: "" (the whole server) and the Step service. */
export const HEALTH_SERVICE_NAMES = ['', 'sam_sidecar.v1.Sidecar'] as const;
