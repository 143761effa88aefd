/**
 * The Helm chart: values against values.schema.json, and the rendered manifests (rendered with Go
 * text/template + sprig by helm/tests/render, as `helm template` would; no helm binary needed).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Ajv from 'ajv';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/server/config.js';

const CHART = join(import.meta.dirname, '..', 'helm', 'sam-sidecar');
const RENDER = join(import.meta.dirname, '..', 'helm', 'tests', 'render');
const GO_ENV = { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOCACHE: join(tmpdir(), 'sam-sidecar-gocache') };
const hasRenderer =
  spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('go', ['list', 'github.com/Masterminds/sprig', 'gopkg.in/yaml.v3'], { env: GO_ENV, stdio: 'ignore' }).status === 0;
if (!hasRenderer) console.warn('helm chart rendering tests skipped: needs golang-go, golang-github-masterminds-sprig-dev, golang-gopkg-yaml.v3-dev (.ci/run installs them)');

interface Manifest {
  template: string;
  object: Record<string, any>;
}

function render(overrides: string[] = []): { values: Record<string, any>; manifests: Manifest[] } {
  const dir = mkdtempSync(join(tmpdir(), 'sam-helm-'));
  const files = overrides.map((yaml, i) => {
    const file = join(dir, `values-${i}.yaml`);
    writeFileSync(file, yaml);
    return file;
  });
  const out = execFileSync('go', ['run', 'main.go', CHART, ...files], { cwd: RENDER, env: GO_ENV, encoding: 'utf8' });
  return JSON.parse(out);
}

const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

function podSpec(manifests: Manifest[]): Record<string, any> {
  const deployment = manifests.find((m) => m.object.kind === 'Deployment');
  expect(deployment).toBeDefined();
  return deployment!.object.spec.template.spec;
}

describe.skipIf(!hasRenderer)('helm chart', () => {
  it('accepts its default values and rejects wrong types, naming the setting', () => {
    const { values } = render();
    expect(validate(values)).toBe(true);
    const wrong = structuredClone(values);
    wrong.http.port = 'eighty';
    wrong.nativeSidecar = 'yes';
    expect(validate(wrong)).toBe(false);
    const paths = validate.errors!.map((e) => e.instancePath);
    expect(paths).toContain('/http/port');
    expect(paths).toContain('/nativeSidecar');
    const unknown = { ...structuredClone(values), replicas: 3 };
    expect(validate(unknown)).toBe(false);
  });

  it('renders a vLLM-Ascend pod with the sidecar as a native sidecar sharing the socket volume', () => {
    const { manifests } = render(['example: {enabled: true}']);
    const pod = podSpec(manifests);
    const sidecar = pod.initContainers.find((c: any) => c.name === 'sam-sidecar');
    expect(sidecar.restartPolicy).toBe('Always');
    const vllm = pod.containers.find((c: any) => c.name === 'vllm');
    const socketVolume = pod.volumes.find((v: any) => v.name === 'sam-sidecar-socket');
    expect(socketVolume.emptyDir.medium).toBe('Memory');
    const mountOf = (c: any) => c.volumeMounts.find((m: any) => m.name === 'sam-sidecar-socket').mountPath;
    expect(mountOf(sidecar)).toBe('/run/sam-sidecar');
    expect(mountOf(vllm)).toBe('/run/sam-sidecar');
    const envOf = (c: any, name: string) => c.env.find((e: any) => e.name === name)?.value;
    expect(envOf(vllm, 'SAM_SIDECAR_SOCKET')).toBe(envOf(sidecar, 'SAM_SIDECAR_SOCKET'));
    expect(envOf(vllm, 'VLLM_SPECULATIVE_BATCH_SIZE_THRE')).toBe('32');
    expect(envOf(vllm, 'SAM_SIDECAR_PEER_UID')).toBe('1000'); // the shim checks who listens on the socket
    expect(envOf(sidecar, 'SAM_SIDECAR_SOCKET')).toBe('/run/sam-sidecar/sock/sidecar.sock');
    // The state-changing JSON Step is off where the port is reachable from the cluster.
    expect(envOf(sidecar, 'SAM_SIDECAR_HTTP_JSON_STEP')).toBe('false');
    expect(vllm.command).toContain('--speculative-config={"method":"sam","num_speculative_tokens":3}');
    // The socket is group-accessible through the pod's fsGroup; the sidecar is not root.
    expect(pod.securityContext.fsGroup).toBe(1000);
    expect(sidecar.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    // HTTP probes on the sidecar's port.
    expect(sidecar.startupProbe.httpGet).toEqual({ path: '/livez', port: 'sam-http' });
    expect(sidecar.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'sam-http' });
    expect(sidecar.livenessProbe.httpGet).toEqual({ path: '/livez', port: 'sam-http' });
    expect(sidecar.ports[0].containerPort).toBe(8479);
    // The shim reaches vLLM's PYTHONPATH from the sidecar image.
    expect(pod.initContainers[0].args).toEqual(['copy-shim', '/opt/sam-sidecar-shim']);
    expect(envOf(vllm, 'PYTHONPATH')).toBe('/opt/sam-sidecar-shim');
  });

  it('puts the sidecar among the containers where native sidecars are off', () => {
    const pod = podSpec(render(['example: {enabled: true}\nnativeSidecar: false']).manifests);
    expect(pod.initContainers.map((c: any) => c.name)).toEqual(['sam-sidecar-shim']);
    const sidecar = pod.containers.find((c: any) => c.name === 'sam-sidecar');
    expect(sidecar).toBeDefined();
    expect(sidecar.restartPolicy).toBeUndefined();
  });

  it('writes a config file the sidecar itself accepts, with the values given', () => {
    const { manifests } = render(['config: {busyPollUs: 2000, wakePollUs: 300, gate: {threshold: 8, mode: adaptive, kByBatch: [[4, 8], [32, 3]]}}']);
    const configMap = manifests.find((m) => m.object.kind === 'ConfigMap')!.object;
    const file = join(mkdtempSync(join(tmpdir(), 'sam-helm-config-')), 'config.json');
    writeFileSync(file, configMap.data['config.json']);
    const config = loadConfig({ file, env: {} });
    expect(config.gate).toMatchObject({ threshold: 8, mode: 'adaptive', kByBatch: [[4, 8], [32, 3]] });
    expect(config.memory.maxTokens).toBe(64_000_000);
    expect(config.busyPollUs).toBe(2000);
    // The byte budgets fit the container: memory and frame buffers within 75 % of its limit, with room for the runtime.
    const deployment = render(['example: {enabled: true}']).manifests.find((m) => m.object.kind === 'Deployment')!.object;
    const container = deployment.spec.template.spec.containers.find((c: any) => c.name === 'sam-sidecar') ?? deployment.spec.template.spec.initContainers.find((c: any) => c.name === 'sam-sidecar');
    const limit = Number(/^(\d+)Gi$/.exec(container.resources.limits.memory)![1]) * 1024 ** 3;
    expect(config.memory.maxBytes + config.limits.maxBufferedBytes + 256 * 1024 ** 2).toBeLessThanOrEqual(0.75 * limit);
    expect(config.wakePollUs).toBe(300);
  });

  it('points the sidecar at an existing Redis when asked: URL, key prefix, the password and a private CA from Secrets', () => {
    const env = (extra: string[]) => {
      const deployment = render(['example: {enabled: true}', ...extra]).manifests.find((m) => m.object.kind === 'Deployment')!.object;
      const containers = [...(deployment.spec.template.spec.initContainers ?? []), ...deployment.spec.template.spec.containers];
      return containers.find((c: { name: string }) => c.name === 'sam-sidecar').env as Array<{ name: string; value?: string; valueFrom?: unknown }>;
    };
    expect(env([]).map((e) => e.name)).not.toContain('SAM_SIDECAR_REDIS_URL');
    const shared = env(['sharing: {redis: {url: "rediss://redis.rl:6380/0", keyPrefix: grpo-qwen-7b, passwordSecret: {name: redis-auth, key: pw}}}']);
    expect(shared.find((e) => e.name === 'SAM_SIDECAR_REDIS_URL')?.value).toBe('rediss://redis.rl:6380/0');
    expect(shared.find((e) => e.name === 'SAM_SIDECAR_REDIS_KEY_PREFIX')?.value).toBe('grpo-qwen-7b');
    expect(shared.find((e) => e.name === 'SAM_SIDECAR_REDIS_PASSWORD')?.valueFrom).toEqual({ secretKeyRef: { name: 'redis-auth', key: 'pw' } });
    // A private CA from a Secret: mounted read-only, its file named to the sidecar.
    const withCa = render(['example: {enabled: true}', 'sharing: {redis: {url: "rediss://redis.rl:6380/0", tlsCaSecret: {name: redis-ca}}}']).manifests.find((m) => m.object.kind === 'Deployment')!.object.spec.template.spec;
    const sidecar = [...(withCa.initContainers ?? []), ...withCa.containers].find((c: { name: string }) => c.name === 'sam-sidecar');
    const caFile = sidecar.env.find((e: { name: string }) => e.name === 'SAM_SIDECAR_REDIS_TLS_CA_FILE')?.value as string;
    const caMount = sidecar.volumeMounts.find((m: { name: string }) => m.name === 'sam-sidecar-redis-ca');
    expect(caFile.startsWith(`${caMount.mountPath}/`)).toBe(true);
    expect(caMount.readOnly).toBe(true);
    expect(caMount.subPath).toBeUndefined(); // a directory mount: the kubelet updates the file when the Secret changes (rotation)
    expect(withCa.volumes.find((v: { name: string }) => v.name === 'sam-sidecar-redis-ca').secret).toEqual({ secretName: 'redis-ca', items: [{ key: 'ca.crt', path: caFile.slice(caMount.mountPath.length + 1) }] });
    expect(env([]).map((e) => e.name)).not.toContain('SAM_SIDECAR_REDIS_TLS_CA_FILE');
    expect(() => render(['example: {enabled: true}', 'sharing: {redis: {url: "redis://redis:6379/0", tlsCaSecret: {name: redis-ca}}}'])).toThrow(/tlsCaSecret needs a rediss:\/\/ sharing.redis.url/);
    // Its bounds reach the sidecar's config file; a bound it does not know is refused by the schema.
    const bounded = render(['sharing: {redis: {url: "redis://redis:6379/0"}}', 'config: {sharing: {redis: {historyMaxTokens: 1000000, publishIntervalMs: 20}}}']);
    const file = join(mkdtempSync(join(tmpdir(), 'sam-helm-sharing-')), 'config.json');
    writeFileSync(file, bounded.manifests.find((m) => m.object.kind === 'ConfigMap')!.object.data['config.json']);
    expect(loadConfig({ file, env: { SAM_SIDECAR_REDIS_URL: 'redis://redis:6379/0' } }).sharing.redis).toMatchObject({ historyMaxTokens: 1_000_000, publishIntervalMs: 20, readIntervalMs: 20 });
    const unknownBound = structuredClone(bounded.values);
    unknownBound.config.sharing.redis.historyMaxBytes = 1;
    expect(validate(unknownBound)).toBe(false);
    const wrong = structuredClone(render().values);
    wrong.sharing.redis.url = 'http://redis:6379';
    expect(validate(wrong)).toBe(false);
    expect(validate.errors!.map((e) => e.instancePath)).toContain('/sharing/redis/url');
  });

  it('ships alert rules and a Grafana dashboard, when asked, that use only metrics the sidecar and the shim export', () => {
    expect(render().manifests.map((m) => m.object.kind)).not.toContain('PrometheusRule');
    const objects = render(['prometheusRule: {enabled: true, labels: {release: prometheus}}\ngrafanaDashboard: {enabled: true}']).manifests.map((m) => m.object);
    const rule = objects.find((o) => o.kind === 'PrometheusRule')!;
    const alerts = rule.spec.groups[0].rules as Array<{ alert: string; expr: string; annotations: { summary: string } }>;
    expect(alerts.map((a) => a.alert)).toEqual(['SamSidecarFailingOpen', 'SamSidecarDeadlineMisses', 'SamSidecarMemoryNearBudget', 'SamSidecarSharingDown']);
    expect(alerts[0].expr).toContain('> 0.05');
    expect(alerts[0].annotations.summary).toContain('{{ $value | humanizePercentage }}');
    const dashboardMap = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboard'))!;
    expect(dashboardMap.metadata.labels.grafana_dashboard).toBe('1');
    const dashboard = JSON.parse(dashboardMap.data['sam-sidecar.json']) as { panels: Array<{ targets: Array<{ expr: string }> }> };
    // Every metric named anywhere is one that exists: the sidecar's (src/server/metrics.ts) or the shim's.
    const sidecarSource = readFileSync(new URL('../src/server/metrics.ts', import.meta.url), 'utf8');
    const known = new Set([...sidecarSource.matchAll(/'(sam_sidecar_[a-z_]+)'/g)].map((m) => m[1]));
    const shimSource = readFileSync(new URL('../python/src/sam_sidecar/metrics.py', import.meta.url), 'utf8');
    for (const [, name] of shimSource.matchAll(/^ {4}"([a-z_]+)": "/gm)) known.add(`sam_sidecar_shim_${name}_total`);
    const used = [...alerts.map((a) => a.expr), ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr))].flatMap((expr) => [...expr.matchAll(/\b(sam_sidecar_[a-z_]+)/g)].map((m) => m[1].replace(/_bucket$/, '')));
    expect(used.length).toBeGreaterThan(10);
    expect(used.filter((name) => !known.has(name))).toEqual([]);
  });

  it('works as a dependency: the values Helm injects (global, and the dependency condition enabled) pass the schema', () => {
    const values = render().values;
    // What a parent chart's `helm install` hands this chart: its global values and `enabled` from
    // `condition: sam-sidecar.enabled`.
    expect(validate({ ...structuredClone(values), global: { imageRegistry: 'registry.local' }, enabled: true })).toBe(true);
    expect(validate({ ...structuredClone(values), enabled: 'yes' })).toBe(false);
  });

  it('reaches tainted 910C nodes from a private registry: pull secrets, node selector, tolerations, affinity, annotations, priority, a PDB', () => {
    const objects = render([
      'example: {enabled: true}',
      'imagePullSecrets: [{name: regcred}]\nnodeSelector: {accelerator: huawei-Ascend910}\ntolerations: [{key: npu, operator: Exists, effect: NoSchedule}]\naffinity: {nodeAffinity: {}}\npodAnnotations: {team: rl}\npodLabels: {job: grpo}\npriorityClassName: rollout\npodDisruptionBudget: {enabled: true}',
    ]).manifests.map((m) => m.object);
    const pod = objects.find((o) => o.kind === 'Deployment')!.spec.template;
    expect(pod.spec).toMatchObject({ imagePullSecrets: [{ name: 'regcred' }], nodeSelector: { accelerator: 'huawei-Ascend910' }, priorityClassName: 'rollout', affinity: { nodeAffinity: {} } });
    expect(pod.spec.tolerations).toEqual([{ key: 'npu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(pod.metadata).toMatchObject({ labels: { job: 'grpo' }, annotations: { team: 'rl' } });
    expect(objects.find((o) => o.kind === 'PodDisruptionBudget')!.spec).toMatchObject({ maxUnavailable: 1 });
    expect(validate(render(['imagePullSecrets: [{name: regcred}]\ntolerations: [{key: npu}]']).values)).toBe(true);
  });

  it('runs the example vLLM-Ascend container as vLLM-Ascend documents it: /health probes, an in-memory /dev/shm, the driver files from the host', () => {
    const pod = podSpec(render(['example: {enabled: true}']).manifests);
    const vllm = pod.containers.find((c: any) => c.name === 'vllm');
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) expect(vllm[probe].httpGet).toEqual({ path: '/health', port: 'http' });
    expect(vllm.volumeMounts.find((m: any) => m.mountPath === '/dev/shm').name).toBe('dshm');
    expect(pod.volumes.find((v: any) => v.name === 'dshm').emptyDir).toEqual({ medium: 'Memory', sizeLimit: '16Gi' });
    const driver = vllm.volumeMounts.find((m: any) => m.mountPath === '/usr/local/Ascend/driver/lib64');
    expect(driver.readOnly).toBe(true);
    expect(pod.volumes.find((v: any) => v.name === driver.name).hostPath.path).toBe('/usr/local/Ascend/driver/lib64');
  });

  it('selects the pods a user names for the metrics Service (own pods do not carry the example\'s labels)', () => {
    const service = render(['metricsService: {enabled: true, selector: {app: my-vllm}}']).manifests.find((m) => m.object.kind === 'Service')!.object;
    expect(service.spec.selector).toEqual({ app: 'my-vllm' });
  });

  it('renders a ServiceMonitor and its Service only when asked', () => {
    expect(render().manifests.map((m) => m.object.kind)).toEqual(['ConfigMap']);
    const kinds = render(['serviceMonitor: {enabled: true, labels: {release: prometheus}}']).manifests.map((m) => m.object);
    const monitor = kinds.find((o) => o.kind === 'ServiceMonitor')!;
    expect(monitor.metadata.labels.release).toBe('prometheus');
    expect(monitor.spec.endpoints[0]).toMatchObject({ port: 'sam-http', path: '/metrics' });
    expect(kinds.find((o) => o.kind === 'Service')!.spec.ports[0].targetPort).toBe('sam-http');
  });
});
