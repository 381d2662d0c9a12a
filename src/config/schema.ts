/**
 * JSON Schemas of config/gateway.yaml and config/policy.yaml. `additionalProperties: false`
 * everywhere: a misspelt key is an error, never a silently ignored safeguard.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { RECORD_KINDS } from '../siem/filter.js';
import { didYouMean } from './errors.js';

const str = { type: 'string', minLength: 1 } as const;
const posInt = { type: 'integer', minimum: 1 } as const;
const hostPort = { type: 'string', minLength: 3 } as const;
const strList = { type: 'array', items: str, uniqueItems: true } as const;

/** Asymmetric JWS algorithms only: HS* (key confusion) and `none` are never accepted. */
export const ASYMMETRIC_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
] as const;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const gatewaySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['upstream', 'auth'],
  properties: {
    version: { const: 1 },
    listen: hostPort,
    adminListen: hostPort,
    publicBaseUrl: str,
    policy: str,
    upstream: {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: {
        url: str,
        // Other bases the upstream writes for itself in links, fullUrls and Locations (checked in gateway.ts).
        linkBases: strList,
        connectTimeoutMs: posInt,
        headersTimeoutMs: posInt,
        bodyTimeoutMs: posInt,
        totalTimeoutMs: posInt,
        connections: posInt,
        // Free text of the upstream's OperationOutcomes (diagnostics, details.text) passed to clients.
        errorText: { type: 'boolean' },
        // Which fields each type needs is checked in load.ts, with a message naming the type.
        auth: {
          type: 'object',
          additionalProperties: false,
          required: ['type'],
          properties: {
            type: { enum: ['none', 'bearer', 'client-credentials'] },
            token: str,
            tokenFile: str,
            tokenUrl: str,
            clientId: str,
            clientSecret: str,
            clientSecretFile: str,
            scope: str,
          },
        },
        tls: {
          type: 'object',
          additionalProperties: false,
          properties: { ca: str, cert: str, key: str },
        },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      required: ['issuer', 'audience'],
      properties: {
        issuer: str,
        audience: str,
        jwksUri: str,
        jwksFile: str,
        algorithms: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string' } },
        // One claim name / dotted path, or several whose roles are united (Keycloak: realm_access.roles, groups).
        rolesClaim: { oneOf: [str, { type: 'array', minItems: 1, uniqueItems: true, items: str }] },
        // IdP role or group name (`/clinician`, `Clinician.ReadWrite`) -> policy role(s); targets are
        // checked against the policy by check-config.
        roleMap: {
          type: 'object',
          minProperties: 1,
          propertyNames: { type: 'string', minLength: 1 },
          additionalProperties: { oneOf: [str, { type: 'array', minItems: 1, uniqueItems: true, items: str }] },
        },
        patientClaims: { type: 'array', minItems: 1, uniqueItems: true, items: str },
        fhirUserClaim: { type: 'string', minLength: 1 },
        scopelessTokens: { enum: ['refuse', 'roles-only'] },
        clockToleranceSec: { type: 'integer', minimum: 0, maximum: 300 },
        tokenCacheSize: { type: 'integer', minimum: 0 },
        requiredTyp: str,
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      required: ['sink'],
      properties: {
        sink: { enum: ['file', 'redis'] },
        path: str,
        url: str,
        stream: str,
        failOpen: { type: 'boolean' },
        rotateBytes: posInt,
        groupCommitMs: { type: 'integer', minimum: 0, maximum: 1000 },
        // Redis sink: how long a request waits for any one Redis command before it is refused (503).
        commandTimeoutMs: { type: 'integer', minimum: 50, maximum: 60_000 },
        // Signed checkpoints: an Ed25519 key (PKCS#8 PEM) signs each writer's chain head.
        checkpoint: {
          type: 'object',
          additionalProperties: false,
          properties: {
            keyFile: str,
            everyRecords: { type: 'integer', minimum: 1, maximum: 1_000_000 },
            everySeconds: { type: 'integer', minimum: 1, maximum: 86_400 },
          },
        },
      },
    },
    alerts: {
      type: 'object',
      additionalProperties: false,
      properties: { webhook: str, webhookSecretFile: str, redisChannel: str },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: { requestBodyBytes: posInt, responseBodyBytes: posInt, decompressedBytes: posInt, maxInflightRequests: posInt, bufferBytes: posInt, bundleEntries: { type: 'integer', minimum: 1, maximum: 10_000 } },
    },
    // The gateway's own paging (sealed continuation tokens; upstream paging links never reach clients).
    paging: {
      type: 'object',
      additionalProperties: false,
      properties: {
        defaultCount: { type: 'integer', minimum: 1, maximum: 1000 },
        maxCount: { type: 'integer', minimum: 1, maximum: 1000 },
        maxUpstreamPages: { type: 'integer', minimum: 1, maximum: 100 },
        minUpstreamCount: { type: 'integer', minimum: 1, maximum: 1000 },
        tokenTtlSeconds: { type: 'integer', minimum: 10, maximum: 86_400 },
        key: str,
        keyFile: str,
      },
    },
    pseudonymKey: str,
    pseudonymKeyFile: str,
    pseudonymPreviousKeysFile: str,
    logLevel: { enum: LOG_LEVELS },
    // The proxy listener's own TLS (PEM files); cert and key go together (checked in gateway.ts).
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['cert', 'key'],
      properties: { cert: str, key: str },
    },
    // Delivery of the audit trail to SIEM targets (syslog over TLS, FHIR Audit Record Repository);
    // URLs, names and which keys apply to which type are checked in gateway.ts.
    siem: {
      type: 'object',
      additionalProperties: false,
      required: ['targets'],
      properties: {
        targets: {
          type: 'array',
          minItems: 1,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'type', 'url'],
            properties: {
              // Names a cursor file and a Redis consumer group: letters, digits, `.`, `_`, `-`.
              name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' },
              type: { enum: ['syslog', 'fhir'] },
              url: str,
              format: { enum: ['balp', 'record'] },
              appName: { type: 'string', pattern: '^[!-~]{1,48}$' },
              hostname: { type: 'string', pattern: '^[!-~]{1,255}$' },
              tls: {
                type: 'object',
                additionalProperties: false,
                properties: { ca: str, cert: str, key: str, serverName: str },
              },
              auth: {
                type: 'object',
                additionalProperties: false,
                required: ['type'],
                properties: {
                  type: { enum: ['none', 'bearer', 'client-credentials'] },
                  token: str,
                  tokenFile: str,
                  tokenUrl: str,
                  clientId: str,
                  clientSecret: str,
                  clientSecretFile: str,
                  scope: str,
                },
              },
              batchSize: { type: 'integer', minimum: 1, maximum: 1000 },
              filter: {
                type: 'object',
                additionalProperties: false,
                properties: {
                  kinds: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: RECORD_KINDS } },
                  decisions: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: ['allow', 'deny', 'error'] } },
                  breakGlassOnly: { type: 'boolean' },
                },
              },
            },
          },
        },
        stateDir: str,
        batchSize: { type: 'integer', minimum: 1, maximum: 10_000 },
        baseDelayMs: { type: 'integer', minimum: 10, maximum: 3_600_000 },
        maxDelayMs: { type: 'integer', minimum: 10, maximum: 86_400_000 },
        pollMs: { type: 'integer', minimum: 10, maximum: 600_000 },
      },
    },
    // SIGTERM: how long in-flight requests may take to finish before connections are cut.
    shutdownGraceMs: { type: 'integer', minimum: 0, maximum: 600_000 },
    // A candidate policy file evaluated in shadow mode (differences audited, never enforced).
    shadowPolicy: str,
    // Load balancers whose X-Forwarded-For is believed (IPs or CIDRs; checked in gateway.ts).
    trustedProxies: strList,
    // Browser origins allowed to call the FHIR API (exact scheme://host[:port]; checked in gateway.ts).
    cors: {
      type: 'object',
      additionalProperties: false,
      properties: { origins: strList },
    },
    // The SMART configuration document, field by field; absent fields come from the issuer's OpenID
    // discovery document (URLs checked in gateway.ts).
    smart: {
      type: 'object',
      additionalProperties: false,
      properties: {
        authorizationEndpoint: str,
        tokenEndpoint: str,
        revocationEndpoint: str,
        introspectionEndpoint: str,
        managementEndpoint: str,
        registrationEndpoint: str,
        scopesSupported: strList,
        capabilities: { type: 'array', uniqueItems: true, items: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]*$' } },
      },
    },
  },
} as const;

const code = { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_-]*$' } as const;
const name = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]*$' } as const;
const labels = { type: 'array', uniqueItems: true, items: str } as const;
const selectors = { type: 'array', uniqueItems: true, items: str } as const;

export const policySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'purposes', 'dataSets', 'roles'],
  properties: {
    version: { const: 1 },
    // The policy's own security-label codes (other code systems), usable in withhold lists.
    labels: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['code', 'system'],
        properties: {
          code: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' },
          system: { type: 'string', pattern: '^[a-z][a-z0-9+.-]*:[^\\s|]+$' },
          display: str,
        },
      },
    },
    purposes: {
      type: 'object',
      propertyNames: code,
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['display'],
        properties: { display: str, parent: str, minimumNecessary: { type: 'boolean' } },
      },
    },
    safeHarbor: {
      type: 'object',
      additionalProperties: false,
      required: ['restrictedZip3'],
      properties: {
        restrictedZip3: { type: 'array', uniqueItems: true, items: { type: 'string', pattern: '^[0-9]{3}$' } },
      },
    },
    dataSets: {
      type: 'object',
      propertyNames: name,
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['rules'],
        properties: {
          description: { type: 'string' },
          withhold: labels,
          deidentify: { enum: ['safe-harbor', 'limited-data-set'] },
          relationship: {
            type: 'object',
            additionalProperties: false,
            required: ['required', 'sources'],
            properties: {
              required: { type: 'boolean' },
              sources: { type: 'array', minItems: 1, uniqueItems: true, items: name },
              purposes: { type: 'array', minItems: 1, uniqueItems: true, items: code },
            },
          },
          consent: {
            type: 'object',
            additionalProperties: false,
            required: ['authorization'],
            properties: {
              authorization: { type: 'array', minItems: 1, uniqueItems: true, items: code },
            },
          },
          rules: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['types'],
              properties: {
                types: { type: 'array', minItems: 1, uniqueItems: true, items: str },
                interactions: {
                  type: 'array',
                  uniqueItems: true,
                  items: { enum: ['read', 'search', 'history', 'create', 'update', 'patch', 'delete', 'relabel'] },
                },
                elements: { ...selectors, minItems: 1 },
                remove: selectors,
                transforms: {
                  type: 'array',
                  items: {
                    type: 'object',
                    additionalProperties: false,
                    required: ['select', 'apply'],
                    properties: {
                      select: str,
                      apply: { enum: ['remove', 'mask', 'year', 'zip3', 'age90', 'pseudonym'] },
                    },
                  },
                },
                search: strList,
                operations: {
                  type: 'array',
                  uniqueItems: true,
                  items: { type: 'string', pattern: '^\\$[A-Za-z][A-Za-z0-9-]*$' },
                },
                withhold: labels,
              },
            },
          },
        },
      },
    },
    relationships: {
      type: 'object',
      additionalProperties: false,
      required: ['sources'],
      properties: {
        cacheSeconds: { type: 'integer', minimum: 1, maximum: 86400 },
        maxCallers: { type: 'integer', minimum: 1, maximum: 1000000 },
        maxPatients: { type: 'integer', minimum: 1, maximum: 10000 },
        searchPatients: { type: 'integer', minimum: 1, maximum: 1000 },
        sources: {
          type: 'object',
          propertyNames: name,
          minProperties: 1,
          additionalProperties: {
            type: 'object',
            additionalProperties: false,
            required: ['kind'],
            properties: {
              kind: { enum: ['CareTeam', 'Encounter', 'EpisodeOfCare', 'PractitionerRole', 'Task'] },
              days: { type: 'integer', minimum: 0, maximum: 3650 },
            },
          },
        },
      },
    },
    consent: {
      type: 'object',
      additionalProperties: false,
      properties: {
        cacheSeconds: { type: 'integer', minimum: 1, maximum: 86400 },
        maxPatients: { type: 'integer', minimum: 1, maximum: 10000000 },
        overlap: { enum: ['deny-wins', 'latest'] },
        exemptPurposes: { type: 'array', uniqueItems: true, items: code },
        breakGlass: { enum: ['override', 'never'] },
        part2: {
          type: 'object',
          additionalProperties: false,
          properties: {
            labels: { type: 'array', minItems: 1, uniqueItems: true, items: str },
            notice: { type: 'string', minLength: 1, maxLength: 2000 },
            breakGlass: { type: 'boolean' },
          },
        },
      },
    },
    roles: {
      type: 'object',
      propertyNames: name,
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['purposes'],
        properties: {
          description: { type: 'string' },
          purposes: { type: 'object', propertyNames: code, additionalProperties: str },
          breakGlass: { type: 'boolean' },
          compartment: { const: 'patient' },
          capabilities: { type: 'array', uniqueItems: true, items: { enum: ['audit-export', 'break-glass-review'] } },
        },
      },
    },
    breakGlass: {
      type: 'object',
      additionalProperties: false,
      required: ['dataSet'],
      properties: {
        dataSet: str,
        sessionMinutes: { type: 'integer', minimum: 1, maximum: 1440 },
        minReasonLength: { type: 'integer', minimum: 1, maximum: 1000 },
        reasons: { type: 'array', uniqueItems: true, minItems: 1, items: code },
        maxSessionsPerDay: { type: 'integer', minimum: 1, maximum: 1000 },
      },
    },
    accessRequests: {
      type: 'object',
      additionalProperties: false,
      required: ['dataSets'],
      properties: {
        maxMinutes: { type: 'integer', minimum: 1, maximum: 43200 },
        minJustificationLength: { type: 'integer', minimum: 1, maximum: 1000 },
        reasons: { type: 'array', uniqueItems: true, minItems: 1, items: code },
        maxPatients: { type: 'integer', minimum: 1, maximum: 1000 },
        maxPending: { type: 'integer', minimum: 1, maximum: 1000 },
        timeZone: { type: 'string', minLength: 1 },
        dataSets: {
          type: 'object',
          propertyNames: name,
          minProperties: 1,
          additionalProperties: {
            type: 'object',
            additionalProperties: false,
            required: ['requesters', 'purposes', 'approvers'],
            properties: {
              requesters: { type: 'array', uniqueItems: true, minItems: 1, items: name },
              purposes: { type: 'array', uniqueItems: true, minItems: 1, items: code },
              approvers: { type: 'array', uniqueItems: true, minItems: 1, items: name },
              maxMinutes: { type: 'integer', minimum: 1, maximum: 43200 },
            },
          },
        },
      },
    },
    anomalies: {
      type: 'object',
      additionalProperties: false,
      required: ['rules'],
      properties: {
        timeZone: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_+/-]*$' },
        rules: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'kind'],
            properties: {
              name,
              kind: { enum: ['bulk-access', 'off-hours', 'denial-burst', 'family-name', 'broad-search', 'no-relationship'] },
              threshold: { type: 'integer', minimum: 1 },
              windowMinutes: { type: 'integer', minimum: 1, maximum: 10080 },
              hours: {
                type: 'object',
                additionalProperties: false,
                required: ['start', 'end'],
                properties: {
                  start: { type: 'string', pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$' },
                  end: { type: 'string', pattern: '^([01][0-9]|2[0-4]):[0-5][0-9]$' },
                },
              },
              days: { type: 'array', uniqueItems: true, minItems: 1, items: { enum: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] } },
              timeZone: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_+/-]*$' },
              roles: strList,
              block: { type: 'boolean' },
            },
            // What each kind needs, reported as a missing property of that rule.
            allOf: [
              // biome-ignore lint/suspicious/noThenProperty: JSON Schema keyword, not a thenable
              { if: { properties: { kind: { enum: ['bulk-access', 'denial-burst', 'broad-search'] } } }, then: { properties: { threshold: { type: 'integer' } }, required: ['threshold'] } },
              // biome-ignore lint/suspicious/noThenProperty: JSON Schema keyword, not a thenable
              { if: { properties: { kind: { const: 'off-hours' } } }, then: { properties: { hours: { type: 'object' } }, required: ['hours'] } },
            ],
          },
        },
      },
    },
  },
} as const;

export interface SchemaProblem {
  /** Where to point: the value (`value`), or the key of the last segment (`key`). */
  readonly path: ReadonlyArray<string | number>;
  readonly at: 'value' | 'key';
  readonly message: string;
  /** The node the problem is about (a missing property: that property), for checks that build on the shape. */
  readonly subject?: ReadonlyArray<string | number>;
}

let ajv: Ajv | undefined;
const validators = new Map<object, ValidateFunction>();

function validatorFor(schema: object): ValidateFunction {
  let v = validators.get(schema);
  if (!v) {
    // verbose: errors carry their schema, whose property names and values feed "did you mean".
    ajv ??= new Ajv({ allErrors: true, strict: true, allowUnionTypes: true, verbose: true });
    v = ajv.compile(schema);
    validators.set(schema, v);
  }
  return v;
}

/** Validates `data` against `schema`; every error, located and phrased for an admin. */
export function validateSchema(schema: object, data: unknown): SchemaProblem[] {
  const validate = validatorFor(schema);
  if (validate(data)) return [];
  return toProblems(validate.errors ?? []);
}

function decodePointer(pointer: string): Array<string | number> {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

function toProblems(errors: readonly ErrorObject[]): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  // oneOf/const branch noise: report the branch errors that explain the problem, not the umbrella.
  const hasSpecific = new Set(errors.filter((e) => e.keyword !== 'oneOf').map((e) => e.instancePath));
  for (const e of errors) {
    if (e.keyword === 'oneOf' && hasSpecific.has(e.instancePath)) continue;
    if (e.keyword === 'if') continue;
    // A bad property name is reported once, by its propertyNames error, not again by the pattern.
    if (e.propertyName !== undefined) continue;
    const path = decodePointer(e.instancePath);
    let p: SchemaProblem;
    switch (e.keyword) {
      case 'required':
        p = {
          path,
          at: 'value',
          message: `${label(path)}missing required property '${e.params.missingProperty}'`,
          subject: [...path, e.params.missingProperty as string],
        };
        break;
      case 'additionalProperties': {
        const name = e.params.additionalProperty as string;
        const known = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {});
        p = { path: [...path, name], at: 'key', message: `${label(path)}unknown property '${name}'${didYouMean(name, known)}` };
        break;
      }
      case 'propertyNames':
        p = { path: [...path, e.params.propertyName as string], at: 'key', message: `${label(path)}invalid name '${e.params.propertyName}'` };
        break;
      case 'enum': {
        const allowed = e.params.allowedValues as unknown[];
        const hint = typeof e.data === 'string' ? didYouMean(e.data, allowed.map(String)) : '';
        p = { path, at: 'value', message: `${label(path)}must be one of: ${allowed.join(', ')}${hint}` };
        break;
      }
      case 'const':
        p = { path, at: 'value', message: `${label(path)}must be ${JSON.stringify(e.params.allowedValue)}` };
        break;
      default:
        p = { path, at: 'value', message: `${label(path)}${e.message ?? 'is invalid'}` };
    }
    const key = `${p.at}:${JSON.stringify(p.path)}:${p.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(p);
  }
  return out;
}

function label(path: ReadonlyArray<string | number>): string {
  if (path.length === 0) return '';
  let s = '';
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : s === '' ? seg : `.${seg}`;
  return `${s}: `;
}
