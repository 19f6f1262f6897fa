// Runs the whole API flow of client.ts (compiled by `npx tsc -p .` into dist/) against a portal
// and prints its summary as one line of JSON. Plain JavaScript, so that no Node.js types are
// needed: fetch, FormData, Blob and crypto.randomUUID are built into Node.js 20.
//
//   FRACTURE_PORTAL_URL                  the portal's address, e.g. http://127.0.0.1:8000
//   FRACTURE_PORTAL_TOKEN                a clinician's token, scopes read and write
//   FRACTURE_PORTAL_READ_TOKEN           the same clinician's token, scope read only
//   FRACTURE_PORTAL_REVIEW_TOKEN         a radiologist's token, scopes read and review
//   FRACTURE_PORTAL_SECOND_REVIEW_TOKEN  another radiologist's token, scopes read and review
//   FRACTURE_PORTAL_IMAGE                a radiograph to upload (PNG, JPEG or DICOM)
//   FRACTURE_PORTAL_OVERSIZE_BYTES       an upload size the portal refuses (above its
//                                        UPLOAD_MAX_FILE_BYTES)
import { readFile } from "node:fs/promises";
import { basename, extname } from "node:path";

import { wholeFlow } from "./dist/client.js";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const TYPES = {
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".dcm": "application/dicom",
};

try {
  const path = required("FRACTURE_PORTAL_IMAGE");
  const type = TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
  const summary = await wholeFlow({
    baseUrl: required("FRACTURE_PORTAL_URL").replace(/\/+$/, ""),
    tokens: {
      clinician: required("FRACTURE_PORTAL_TOKEN"),
      readOnly: required("FRACTURE_PORTAL_READ_TOKEN"),
      radiologist: required("FRACTURE_PORTAL_REVIEW_TOKEN"),
      secondRadiologist: required("FRACTURE_PORTAL_SECOND_REVIEW_TOKEN"),
    },
    image: new Blob([await readFile(path)], { type }),
    imageName: basename(path),
    oversizeBytes: Number(required("FRACTURE_PORTAL_OVERSIZE_BYTES")),
  });
  console.log(JSON.stringify(summary));
} catch (error) {
  console.error(`the flow failed: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
}
