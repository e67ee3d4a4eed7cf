import { describe, expect, it } from 'vitest';
import { registeredAdminRoutes } from '../../src/http/admin.js';
import { ADMIN_ROUTES, buildAdminOpenApi, renderAdminDocs, SCHEMAS } from '../../src/http/openapi.js';
import { startTestGateway } from '../helpers.js';

describe('admin OpenAPI', () => {
  it('is structurally valid OpenAPI 3.1 and every $ref resolves', () => {
    const spec = buildAdminOpenApi() as {
      openapi: string;
      info: unknown;
      paths: Record<string, Record<string, { responses: object }>>;
      components: { schemas: Record<string, unknown> };
    };
    expect(spec.openapi).toBe('3.1.0');
    expect(spec.info).toBeTruthy();
    for (const ops of Object.values(spec.paths))
      for (const op of Object.values(ops)) expect(Object.keys(op.responses).length).toBeGreaterThan(0);
    const refs = [...JSON.stringify(spec).matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)].map(
      (m) => m[1]!,
    );
    expect(refs.length).toBeGreaterThan(10);
    for (const r of refs) expect(spec.components.schemas[r], r).toBeTruthy();
  });

  it('documents exactly the routes the server registers, and the page lists them all', async () => {
    const gw = await startTestGateway();
    try {
      const served = new Set(registeredAdminRoutes.map((r) => `${r.method} ${r.url.replace(/\/$/, '')}`));
      const documented = new Set(
        ADMIN_ROUTES.map(
          (r) => `${r.method.toUpperCase()} /api/admin/v1${r.path.replace(/\{(\w+)\}/g, ':$1')}`,
        ),
      );
      expect([...documented].filter((x) => !served.has(x))).toEqual([]);
      expect([...served].filter((x) => !documented.has(x))).toEqual([]);
      const spec = (await (await fetch(gw.url + '/api/admin/v1/openapi.json')).json()) as {
        openapi: string;
        components: { schemas: unknown };
      };
      expect(spec.openapi).toBe('3.1.0');
      // the served schemas are the validator's TypeBox objects, as JSON
      expect(spec.components.schemas).toEqual(JSON.parse(JSON.stringify(SCHEMAS)));
      const page = await (await fetch(gw.url + '/api/admin/v1/docs')).text();
      for (const r of ADMIN_ROUTES) expect(page).toContain(`/api/admin/v1${r.path}`);
      expect(renderAdminDocs()).not.toMatch(/https?:\/\/(?!127)/); // no external assets
    } finally {
      await gw.close();
      await gw.dbh.close();
    }
  }, 30_000);
});
