/**
 * The gateway's logger. Allow-list serializers only: no request URL, query, header or body is ever
 * logged (paths carry patient ids, queries carry names, headers carry tokens). Callers log ids,
 * codes and counts.
 */
import { type DestinationStream, type Logger, pino } from 'pino';

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'phi-gateway' },
      // Even if someone logs a request or error object, only these fields survive.
      serializers: {
        req: (req: { id?: string; method?: string }) => ({ id: req.id, method: req.method }),
        res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
        err: (err: { name?: string; code?: string; message?: string }) => ({ name: err?.name, code: err?.code }),
      },
      redact: { paths: ['authorization', '*.authorization', 'headers', '*.headers', 'token', '*.token'], remove: true },
    },
    destination,
  );
}
