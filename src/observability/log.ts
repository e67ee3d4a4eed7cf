import pino, { type Logger } from 'pino';

/**
 * Structured JSON logs. Secrets never reach a log line: request bodies are not logged, and these paths
 * are redacted wherever an object carrying them is logged by accident.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'anima' },
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers["x-api-key"]',
          'headers.authorization',
          'headers["x-api-key"]',
          'credential',
          '*.credential',
          'sk',
          '*.sk',
        ],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096 }),
  );
}
