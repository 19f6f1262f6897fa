// The whole API flow, written as an integrator would: typed from the `schema.d.ts` that
// openapi-typescript generates from the live schema, every request made by openapi-fetch (no
// hand-written HTTP). The test suite compiles it with tsc and runs it against a live server
// (run.mjs); any answer other than the expected one throws, with the step, the HTTP status and
// the error body in the message. It returns a summary that the test asserts on.
//
// Not covered here: 429 `throttled`. Throttling counts per token scope, so exhausting the read
// rate would also stop the polling below; the test of the Python client covers it.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type ApiError = components["schemas"]["Error"];
type CaseDetail = components["schemas"]["CaseDetailOutput"];
type Client = ReturnType<typeof createClient<paths>>;

export interface FlowOptions {
  baseUrl: string;
  tokens: {
    /** A clinician's token with the read and write scopes. */
    clinician: string;
    /** The same clinician's token with the read scope only. */
    readOnly: string;
    /** Two radiologists' tokens with the read and review scopes. */
    radiologist: string;
    secondRadiologist: string;
  };
  /** A radiograph to upload, and its file name. */
  image: Blob;
  imageName: string;
  /** The size of an upload the server must refuse as too large (above UPLOAD_MAX_FILE_BYTES). */
  oversizeBytes: number;
  pollIntervalMs?: number;
  pollTimeoutMs?: number;
}

export interface ErrorSummary {
  status: number;
  code: string;
}

export interface DownloadSummary {
  status: number;
  contentType: string | null;
  contentDisposition: string | null;
  bytes: number;
  pngMagic: boolean;
}

export interface FlowSummary {
  created: { status: number; id: string; replayed: boolean; caseStatus: string };
  replay: { status: number; id: string; replayed: boolean };
  polls: number;
  result: {
    status: string;
    imageCount: number;
    imageId: number;
    probability: number;
    label: string;
    heatmapUrl: string;
    localises: boolean;
    candidates: number;
    /** Candidate boxes as fractions of the image (what a viewer draws on a resized copy). */
    sites: { x: number; y: number; w: number; h: number; score: number }[];
    width: number;
    height: number;
  };
  downloads: { heatmap: DownloadSummary; image: DownloadSummary; missingImage: ErrorSummary };
  list: {
    predictedIds: string[];
    predictedImageCount: number;
    reviewedCount: number;
    createdAfterCount: number;
  };
  review: {
    queue: { id: string; stage: number | null }[];
    claim: { claimedBy: string | null; stage: number | null };
    claimByOther: ErrorSummary;
    firstRead: { status: string; needsSecondRead: boolean };
    secondClaim: { claimedBy: string | null; stage: number | null };
    finalRead: { status: string; finalLabel: string | null; readNumbers: number[] };
    caseFinalLabel: string | null;
  };
  cancel: { id: string; status: string; refused: ErrorSummary };
  errors: {
    anonymous: ErrorSummary & { wwwAuthenticate: string | null };
    badToken: ErrorSummary;
    readOnlyCreate: ErrorSummary;
    notFound: ErrorSummary;
    tooLarge: ErrorSummary & { bytes: number };
  };
}

const PENDING = ["received", "queued", "predicting"];
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export async function wholeFlow(options: FlowOptions): Promise<FlowSummary> {
  const { baseUrl, tokens } = options;
  const clientFor = (token?: string): Client =>
    createClient<paths>({
      baseUrl,
      headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
    });
  const clin = clientFor(tokens.clinician);
  const radA = clientFor(tokens.radiologist);
  const radB = clientFor(tokens.secondRadiologist);

  const newCase = (api: Client, key: string | undefined, patientRef: string, file: Blob) =>
    api.POST("/api/v1/cases/", {
      params: { header: key === undefined ? {} : { "Idempotency-Key": key } },
      // `images` are binary parts (typed as strings, openapi-typescript #875): the body is
      // sent as multipart form data built here.
      body: {
        patient_ref: patientRef,
        body_part: "hand",
        clinical_question: "Fall on wrist",
        images: [],
      },
      bodySerializer(body) {
        const form = new FormData();
        form.append("patient_ref", body.patient_ref);
        form.append("body_part", body.body_part);
        if (body.clinical_question) form.append("clinical_question", body.clinical_question);
        form.append("images", file, options.imageName);
        return form;
      },
    });

  // Create with an Idempotency-Key, then replay it: 202 (accepted), then 200 with the same case.
  const key = crypto.randomUUID();
  const createdAnswer = await newCase(clin, key, "PSN-0001", options.image);
  const created = expectData("create", createdAnswer, 202);
  check("create", created.replayed === false, `replayed is ${created.replayed}`);
  check(
    "create",
    [...PENDING, "predicted"].includes(created.status),
    `status ${created.status}`,
  );
  const replayAnswer = await newCase(clin, key, "PSN-0001", options.image);
  const replay = expectData("replay", replayAnswer, 200);
  check("replay", replay.id === created.id, `another case ${replay.id}`);
  check("replay", replay.replayed === true, `replayed is ${replay.replayed}`);
  const caseId = created.id;

  // Poll until the prediction is done.
  const deadline = Date.now() + (options.pollTimeoutMs ?? 120_000);
  let detail: CaseDetail;
  let polls = 0;
  for (;;) {
    polls += 1;
    detail = expectData(
      "poll",
      await clin.GET("/api/v1/cases/{uuid}/", { params: { path: { uuid: caseId } } }),
      200,
    );
    if (!PENDING.includes(detail.status)) break;
    check("poll", Date.now() < deadline, `still ${detail.status} after ${polls} polls`);
    await sleep(options.pollIntervalMs ?? 500);
  }
  check("result", detail.status === "predicted", `status ${detail.status}`);
  check("result", detail.images.length === 1, `${detail.images.length} images`);
  const image = detail.images[0];
  const prediction = image.prediction;
  if (prediction === null) throw new Error("result: the image has no prediction");
  const { probability, label, heatmap_url: heatmapUrl } = prediction;
  if (probability === null || probability < 0 || probability > 1) {
    throw new Error(`result: probability ${probability}`);
  }
  if (label === null) throw new Error("result: no label");
  if (heatmapUrl === null) throw new Error("result: no heat-map");
  check("result", image.width > 0 && image.height > 0, `size ${image.width}x${image.height}`);
  check(
    "result",
    prediction.localises || prediction.candidates.length === 0,
    "candidates from a version that does not localise",
  );
  // The suspected fracture sites are in pixels of the canonical image: as fractions, to draw
  // them on a resized copy.
  const sites = prediction.candidates.map((c) => ({
    x: c.x0 / image.width,
    y: c.y0 / image.height,
    w: (c.x1 - c.x0) / image.width,
    h: (c.y1 - c.y0) / image.height,
    score: c.score,
  }));

  // Downloads are binary (read as a Blob); their errors are parsed JSON.
  const imagePath = { uuid: caseId, image_id: image.id };
  const heatmap = await download(
    "heat-map download",
    await clin.GET("/api/v1/cases/{uuid}/images/{image_id}/heatmap/", {
      params: { path: imagePath },
      parseAs: "blob",
    }),
  );
  const picture = await download(
    "image download",
    await clin.GET("/api/v1/cases/{uuid}/images/{image_id}/file/", {
      params: { path: imagePath },
      parseAs: "blob",
    }),
  );
  const missingImage = expectError(
    "missing image download",
    await clin.GET("/api/v1/cases/{uuid}/images/{image_id}/file/", {
      params: { path: { uuid: caseId, image_id: image.id + 10_000 } },
      parseAs: "blob",
    }),
    404,
    "not_found",
  );

  // List with filters.
  const predicted = expectData(
    "list predicted",
    await clin.GET("/api/v1/cases/", {
      params: { query: { status: "predicted", body_part: "hand", page_size: 50 } },
    }),
    200,
  );
  const reviewed = expectData(
    "list reviewed",
    await clin.GET("/api/v1/cases/", { params: { query: { status: "reviewed" } } }),
    200,
  );
  const createdAfter = expectData(
    "list created after",
    await clin.GET("/api/v1/cases/", { params: { query: { created_after: detail.created_at } } }),
    200,
  );

  // Review: the queue, a claim, another radiologist's claim refused, the first read, then the
  // second (final) read by the other radiologist.
  const queue = expectData(
    "review queue",
    await radA.GET("/api/v1/review/queue/", { params: { query: { body_part: "hand" } } }),
    200,
  );
  const casePath = { params: { path: { uuid: caseId } } };
  const claim = expectData(
    "claim",
    await radA.POST("/api/v1/review/cases/{uuid}/claim/", casePath),
    200,
  );
  const claimByOther = expectError(
    "claim by another radiologist",
    await radB.POST("/api/v1/review/cases/{uuid}/claim/", casePath),
    409,
    "claimed_by_other",
  );
  const reads = { reads: [{ image_id: image.id, decision: "confirm" as const }] };
  const firstRead = expectData(
    "first read",
    await radA.POST("/api/v1/review/cases/{uuid}/reads/", { ...casePath, body: reads }),
    200,
  );
  check("first read", firstRead.review.needs_second_read, "no second read asked for");
  check("first read", firstRead.status !== "reviewed", "reviewed after one read");
  const secondClaim = expectData(
    "second claim",
    await radB.POST("/api/v1/review/cases/{uuid}/claim/", casePath),
    200,
  );
  const finalRead = expectData(
    "final read",
    await radB.POST("/api/v1/review/cases/{uuid}/reads/", { ...casePath, body: reads }),
    200,
  );
  check("final read", finalRead.status === "reviewed", `status ${finalRead.status}`);
  const afterReview = expectData(
    "case after review",
    await clin.GET("/api/v1/cases/{uuid}/", casePath),
    200,
  );

  // Cancel: a pending case can be cancelled, a reviewed one cannot.
  const other = expectData(
    "create a second case",
    await newCase(clin, crypto.randomUUID(), "PSN-0002", options.image),
    202,
  );
  const cancelled = expectData(
    "cancel",
    await clin.POST("/api/v1/cases/{uuid}/cancel/", { params: { path: { uuid: other.id } } }),
    200,
  );
  check("cancel", cancelled.status === "cancelled", `status ${cancelled.status}`);
  const refused = expectError(
    "cancel a reviewed case",
    await clin.POST("/api/v1/cases/{uuid}/cancel/", casePath),
    409,
    "invalid_state",
  );

  // Error shapes, each parsed into `Error`: 401 (no token, a bad token), 403, 404, 413.
  const anonymousAnswer = await clientFor().GET("/api/v1/cases/");
  const anonymous = expectError("no token", anonymousAnswer, 401, "not_authenticated");
  const wwwAuthenticate = anonymousAnswer.response.headers.get("WWW-Authenticate");
  check("no token", wwwAuthenticate !== null, "no WWW-Authenticate header");
  const badToken = expectError(
    "bad token",
    await clientFor("fp_deadbeef_nope").GET("/api/v1/cases/"),
    401,
    "authentication_failed",
  );
  const readOnlyCreate = expectError(
    "create with a read-only token",
    await newCase(clientFor(tokens.readOnly), undefined, "PSN-0003", options.image),
    403,
    "insufficient_scope",
  );
  const notFound = expectError(
    "unknown case",
    await clin.GET("/api/v1/cases/{uuid}/", {
      params: { path: { uuid: crypto.randomUUID() } },
    }),
    404,
    "not_found",
  );
  const padding = new Uint8Array(Math.max(0, options.oversizeBytes - options.image.size));
  const oversize = new Blob([options.image, padding]);
  const tooLarge = expectError(
    "oversize upload",
    await newCase(clin, crypto.randomUUID(), "PSN-0004", oversize),
    413,
    "file_too_large",
  );

  return {
    created: {
      status: createdAnswer.response.status,
      id: created.id,
      replayed: created.replayed,
      caseStatus: created.status,
    },
    replay: { status: replayAnswer.response.status, id: replay.id, replayed: replay.replayed },
    polls,
    result: {
      status: detail.status,
      imageCount: detail.images.length,
      imageId: image.id,
      probability,
      label,
      heatmapUrl,
      localises: prediction.localises,
      candidates: prediction.candidates.length,
      sites,
      width: image.width,
      height: image.height,
    },
    downloads: { heatmap, image: picture, missingImage },
    list: {
      predictedIds: predicted.results.map((row) => row.id),
      predictedImageCount: predicted.results[0]?.image_count ?? 0,
      reviewedCount: reviewed.count,
      createdAfterCount: createdAfter.count,
    },
    review: {
      queue: queue.results.map((row) => ({ id: row.id, stage: row.stage })),
      claim: { claimedBy: claim.claimed_by, stage: claim.stage },
      claimByOther,
      firstRead: { status: firstRead.status, needsSecondRead: firstRead.review.needs_second_read },
      secondClaim: { claimedBy: secondClaim.claimed_by, stage: secondClaim.stage },
      finalRead: {
        status: finalRead.status,
        finalLabel: finalRead.review.final_label,
        readNumbers: finalRead.images[0].reads.map((read) => read.read_number),
      },
      caseFinalLabel: afterReview.review.final_label,
    },
    cancel: { id: other.id, status: cancelled.status, refused },
    errors: {
      anonymous: { ...anonymous, wwwAuthenticate },
      badToken,
      readOnlyCreate,
      notFound,
      tooLarge: { ...tooLarge, bytes: oversize.size },
    },
  };
}

interface Answer<T> {
  data?: T;
  error?: ApiError;
  response: Response;
}

function describe(step: string, answer: Answer<unknown>): string {
  const body = answer.error === undefined ? "" : ` ${JSON.stringify(answer.error)}`;
  return `${step}: unexpected answer HTTP ${answer.response.status}${body}`;
}

function check(step: string, condition: boolean, detail: string): asserts condition {
  if (!condition) throw new Error(`${step}: ${detail}`);
}

/** The parsed body of a successful answer with the expected status, or a thrown Error. */
function expectData<T>(step: string, answer: Answer<T>, status: number): T {
  if (answer.data === undefined || answer.response.status !== status) {
    throw new Error(`${describe(step, answer)} (expected ${status})`);
  }
  return answer.data;
}

/** The `Error` body of an answer with the expected status and code, or a thrown Error. */
function expectError(
  step: string,
  answer: Answer<unknown>,
  status: number,
  code: string,
): ErrorSummary {
  if (answer.response.status !== status || answer.error?.code !== code) {
    throw new Error(`${describe(step, answer)} (expected ${status} ${code})`);
  }
  return { status, code };
}

async function download(step: string, answer: Answer<Blob>): Promise<DownloadSummary> {
  const blob = expectData(step, answer, 200);
  const head = new Uint8Array(await blob.slice(0, PNG_MAGIC.length).arrayBuffer());
  const pngMagic = PNG_MAGIC.every((byte, index) => head[index] === byte);
  check(step, pngMagic, "not a PNG");
  return {
    status: answer.response.status,
    contentType: answer.response.headers.get("Content-Type"),
    contentDisposition: answer.response.headers.get("Content-Disposition"),
    bytes: blob.size,
    pngMagic,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
