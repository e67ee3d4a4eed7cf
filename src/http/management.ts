/**
 * The management endpoints (Spring Boot's actuator paths): liveness, readiness, Prometheus. Served on the
 * data-plane listener and, with ANIMA_MANAGEMENT_PORT, on a listener of their own; what each listener
 * serves and whether it asks for a bearer is an ActuatorAccess (decided in app/security.ts).
 */
import { createServer } from 'node:http';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  LogController,
} from 'fastify';
import type { Logger } from 'pino';

export interface Readiness {
  up: boolean;
  degraded?: boolean;
  components: Record<string, { status: string; details?: unknown }>;
}

export interface ActuatorDeps {
  /** The Prometheus exposition (this process's registry, or every worker's merged by the cluster primary). */
  scrape: () => Promise<{ contentType: string; text: string }>;
  readiness: () => Promise<Readiness>;
}

export interface ActuatorAccess {
  /** /actuator/prometheus is served here (else 404). */
  prometheus: boolean;
  /** Readiness carries its components here (else just the status, for load balancers). */
  details: boolean;
  /** The bearer check; null = open. Prometheus without it is 401; readiness without it is status only. */
  authorize: ((authorization: string | undefined) => boolean) | null;
}

const CHALLENGE = 'Bearer realm="anima-management"';

function unauthorized(reply: FastifyReply, given: boolean): void {
  void reply
    .code(401)
    .header('www-authenticate', CHALLENGE)
    .send({
      error: {
        message: given
          ? 'Management endpoint: unknown bearer token.'
          : 'Management endpoint: send "Authorization: Bearer <token>" (ANIMA_MANAGEMENT_TOKEN or an admin token).',
        type: 'authentication_error',
        param: null,
        code: given ? 'invalid_management_token' : 'missing_management_token',
      },
    });
}

/** Registers the actuator routes on a Fastify instance, as `access` allows. */
export function registerActuator(app: FastifyInstance, d: ActuatorDeps, access: ActuatorAccess): void {
  // Liveness says only that the process answers: open on every listener (probes send no token).
  app.get('/actuator/health', async () => ({ status: 'UP' }));
  app.get('/actuator/health/liveness', async () => ({ status: 'UP' }));
  app.get('/actuator/health/readiness', async (req, reply) => {
    const r = await d.readiness();
    const status = r.up ? (r.degraded ? 'DEGRADED' : 'UP') : 'DOWN';
    // A load balancer's probe sends no token and needs only the code: the status is never refused, the
    // components (dependency kinds, billing backlog) only go to a caller that may read metrics.
    const details = access.details && (!access.authorize || access.authorize(req.headers.authorization));
    void reply.code(r.up ? 200 : 503).send(details ? { status, components: r.components } : { status });
  });
  if (!access.prometheus) return;
  app.get('/actuator/prometheus', async (req, reply) => {
    if (access.authorize && !access.authorize(req.headers.authorization)) {
      unauthorized(reply, !!req.headers.authorization);
      return reply;
    }
    const { contentType, text } = await d.scrape();
    void reply.header('content-type', contentType).send(text);
    return reply;
  });
}

/** The management listener: the actuator routes and nothing else (no data plane, no admin API). */
export function buildManagementServer(d: ActuatorDeps, access: ActuatorAccess, log: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: log as unknown as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024,
    serverFactory: (handler) => createServer({ requestTimeout: 10_000, headersTimeout: 10_000 }, handler),
    forceCloseConnections: true,
    return503OnClosing: true,
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({
      error: {
        message: `Unknown management route: ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}`,
        type: 'invalid_request_error',
        param: null,
        code: 'not_found',
      },
    });
  });
  app.setErrorHandler((err, _req, reply) => {
    log.warn({ err: { message: String((err as Error)?.message ?? err) } }, 'management endpoint failed');
    void reply.code(500).send({
      error: { message: 'internal error', type: 'server_error', param: null, code: 'internal_error' },
    });
  });
  registerActuator(app, d, access);
  return app;
}
