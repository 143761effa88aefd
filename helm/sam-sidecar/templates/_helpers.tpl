{{/*
Named templates other charts include to put sam-sidecar into their vLLM-Ascend pods. Each takes a
context whose .Values are this chart's values (as a subchart: the parent passes
(dict "Values" .Values.samSidecar "Release" .Release "Chart" .Chart)).

  initContainers:            # nativeSidecar: true (else put it under containers)
    - {{- include "sam-sidecar.container" $ctx | nindent 6 }}
  containers:
    - name: vllm
      env:          {{- include "sam-sidecar.clientEnv" $ctx | nindent 8 }}
      volumeMounts: {{- include "sam-sidecar.clientVolumeMount" $ctx | nindent 8 }}
  volumes:          {{- include "sam-sidecar.volumes" $ctx | nindent 4 }}
  securityContext:  fsGroup from .Values.podSecurityContext (the socket is group-accessible)
*/}}

{{- define "sam-sidecar.fullname" -}}
{{- printf "%s-sam-sidecar" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sam-sidecar.selectorLabels" -}}
app.kubernetes.io/name: sam-sidecar
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sam-sidecar.labels" -}}
{{ include "sam-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sam-sidecar.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "sam-sidecar.socketPath" -}}
{{- /* In a directory the sidecar creates itself (owner-only, group-searchable): the shared volume is writable by every container of the pod, and a socket there could be replaced. */ -}}
{{- printf "%s/sock/%s" (.Values.socket.dir | trimSuffix "/") .Values.socket.file -}}
{{- end -}}

{{/* The sidecar container, one list item (without the leading dash). */}}
{{- define "sam-sidecar.container" -}}
name: sam-sidecar
image: {{ include "sam-sidecar.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- if .Values.nativeSidecar }}
restartPolicy: Always
{{- end }}
args: ["serve"]
env:
  - name: SAM_SIDECAR_SOCKET
    value: {{ include "sam-sidecar.socketPath" . | quote }}
  - name: SAM_SIDECAR_HTTP_HOST
    value: "0.0.0.0"
  - name: SAM_SIDECAR_HTTP_PORT
    value: {{ .Values.http.port | quote }}
  - name: SAM_SIDECAR_HTTP_JSON_STEP
    value: {{ .Values.http.jsonStep | default false | quote }}
  - name: SAM_SIDECAR_CONFIG
    value: /etc/sam-sidecar/config.json
  {{- if .Values.http.tokenSecret.name }}
  - name: SAM_SIDECAR_HTTP_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ .Values.http.tokenSecret.name | quote }}
        key: {{ .Values.http.tokenSecret.key | default "token" | quote }}
  {{- end }}
  {{- with .Values.sharing.redis }}
  {{- if .url }}
  - name: SAM_SIDECAR_REDIS_URL
    value: {{ .url | quote }}
  {{- if .keyPrefix }}
  - name: SAM_SIDECAR_REDIS_KEY_PREFIX
    value: {{ .keyPrefix | quote }}
  {{- end }}
  {{- if .passwordSecret.name }}
  - name: SAM_SIDECAR_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .passwordSecret.name | quote }}
        key: {{ .passwordSecret.key | default "password" | quote }}
  {{- end }}
  {{- if include "sam-sidecar.redisCaSecret" $ }}
  {{- if not (hasPrefix "rediss://" .url) }}
  {{- fail "sharing.redis.tlsCaSecret needs a rediss:// sharing.redis.url (TLS)" }}
  {{- end }}
  - name: SAM_SIDECAR_REDIS_TLS_CA_FILE
    value: /etc/sam-sidecar-redis-ca/ca.pem
  {{- end }}
  {{- end }}
  {{- end }}
ports:
  - name: sam-http
    containerPort: {{ .Values.http.port }}
    protocol: TCP
startupProbe:
  httpGet: { path: /livez, port: sam-http }
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
readinessProbe:
  httpGet: { path: /readyz, port: sam-http }
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet: { path: /livez, port: sam-http }
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: sam-sidecar-socket
    mountPath: {{ .Values.socket.dir }}
  - name: sam-sidecar-config
    mountPath: /etc/sam-sidecar
    readOnly: true
  {{- if include "sam-sidecar.redisCaSecret" . }}
  - name: sam-sidecar-redis-ca
    mountPath: /etc/sam-sidecar-redis-ca
    readOnly: true
  {{- end }}
{{- end -}}

{{/* Pod volumes: the in-memory socket directory, the config file, and the Redis CA when there is one. */}}
{{- define "sam-sidecar.volumes" -}}
- name: sam-sidecar-socket
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.socket.sizeLimit }}
- name: sam-sidecar-config
  configMap:
    name: {{ include "sam-sidecar.fullname" . }}
{{- with include "sam-sidecar.redisCaSecret" . }}
- name: sam-sidecar-redis-ca
  secret:
    secretName: {{ . | quote }}
    items:
      - key: {{ $.Values.sharing.redis.tlsCaSecret.key | default "ca.crt" | quote }}
        path: ca.pem
{{- end }}
{{- end -}}

{{/* The Secret holding the Redis CA when sharing is on and one is named; empty otherwise. */}}
{{- define "sam-sidecar.redisCaSecret" -}}
{{- with .Values.sharing.redis }}{{ if .url }}{{ (.tlsCaSecret).name }}{{ end }}{{ end }}
{{- end -}}

{{/* For the vLLM container: the socket directory. */}}
{{- define "sam-sidecar.clientVolumeMount" -}}
- name: sam-sidecar-socket
  mountPath: {{ .Values.socket.dir }}
{{- end -}}

{{/* For the vLLM container: where the shim finds the sidecar, its deadline, and the local switch
     it applies while the sidecar is unreachable (the same threshold the sidecar uses). */}}
{{- define "sam-sidecar.clientEnv" -}}
- name: SAM_SIDECAR_SOCKET
  value: {{ include "sam-sidecar.socketPath" . | quote }}
- name: SAM_SIDECAR_DEADLINE_MS
  value: {{ .Values.client.deadlineMs | quote }}
- name: VLLM_SPECULATIVE_BATCH_SIZE_THRE
  value: {{ .Values.config.gate.threshold | quote }}
{{- if .Values.securityContext.runAsUser }}
{{- /* The shim sends steps only to a socket whose listener runs as this user (SO_PEERCRED). */}}
- name: SAM_SIDECAR_PEER_UID
  value: {{ .Values.securityContext.runAsUser | quote }}
{{- end }}
{{- end -}}
