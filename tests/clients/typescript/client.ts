// The API flow written against the types openapi-typescript generates from the live schema,
// as an integrator would write it; the test suite checks it with `tsc --noEmit`.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type ApiError = components["schemas"]["Error"];
type CaseDetail = components["schemas"]["CaseDetailOutput"];

export async function flow(baseUrl: string, token: string, files: Blob[]): Promise<Blob> {
  const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

  const created = await api.POST("/api/v1/cases/", {
    params: { header: { "Idempotency-Key": crypto.randomUUID() } },
    // `images` are binary parts: the body is sent as multipart form data.
    body: { patient_ref: "PSN-0001", body_part: "hand", images: [] },
    bodySerializer(body) {
      const form = new FormData();
      form.append("patient_ref", body.patient_ref);
      form.append("body_part", body.body_part);
      for (const file of files) form.append("images", file);
      return form;
    },
  });
  if (created.error) throw new Error(describe(created.error));
  const caseId: string = created.data.id;

  let detail: CaseDetail;
  for (;;) {
    const polled = await api.GET("/api/v1/cases/{uuid}/", { params: { path: { uuid: caseId } } });
    if (polled.error) throw new Error(describe(polled.error));
    detail = polled.data;
    if (!["received", "queued", "predicting"].includes(detail.status)) break;
  }
  const image = detail.images[0];
  const probability: number | null = image.prediction?.probability ?? null;
  console.log(detail.status, probability, image.prediction?.label);
  // The model's suspected fracture sites, in pixels of the canonical image: as fractions to draw
  // them on a resized copy.
  const sites = (image.prediction?.candidates ?? []).map((c) => ({
    x: c.x0 / image.width,
    y: c.y0 / image.height,
    w: (c.x1 - c.x0) / image.width,
    h: (c.y1 - c.y0) / image.height,
    score: c.score,
  }));
  console.log(image.prediction?.localises ? `${sites.length} suspected sites` : "no site marking");

  const listed = await api.GET("/api/v1/cases/", {
    params: { query: { status: "predicted", body_part: "hand", page_size: 50 } },
  });
  console.log(listed.data?.count);

  const queue = await api.GET("/api/v1/review/queue/", { params: { query: { stage: 1 } } });
  console.log(queue.data?.results.map((row) => row.id));
  const claim = await api.POST("/api/v1/review/cases/{uuid}/claim/", {
    params: { path: { uuid: caseId } },
  });
  if (claim.error?.code === "claimed_by_other") return new Blob();
  // The reads body of docs/api.md, unchanged: optional fields may be left out.
  const read = await api.POST("/api/v1/review/cases/{uuid}/reads/", {
    params: { path: { uuid: caseId } },
    body: {
      reads: [
        {
          image_id: image.id,
          decision: "correct",
          region: { x: 0.4, y: 0.3, w: 0.2, h: 0.1 },
          comment: "distal radius",
        },
      ],
    },
  });
  console.log(read.data?.review.final_label);

  const heatmap = await api.GET("/api/v1/cases/{uuid}/images/{image_id}/heatmap/", {
    params: { path: { uuid: caseId, image_id: image.id } },
    parseAs: "blob",
  });
  if (heatmap.error) throw new Error(describe(heatmap.error));
  return heatmap.data;
}

function describe(error: ApiError): string {
  return `${error.code}: ${error.message}`;
}
