/** The sidecar's transports, by the names used in config, metrics labels and `replay --via`. */
export const TRANSPORTS = ['uds', 'grpc', 'http'] as const;
export type Transport = (typeof TRANSPORTS)[number];
