import ModelClient from "@azure-rest/ai-inference";
import { isUnexpected } from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";

// The official embeddings sample (github/codespaces-models, samples/js/azure_ai_inference/embeddings.js).
// Changed: key and endpoint come from the environment (the local model server by default).
const token = process.env["PHI_API_KEY"] ?? "no-key-needed";
const endpoint = process.env["PHI_ENDPOINT"] ?? "http://127.0.0.1:8765";
// The local server accepts any model name and answers with the embedding model it has;
// elsewhere, name an embedding model the server serves.
const modelName = "text-embedding-3-small";
// Changed: a plain http:// endpoint (the local server) must be allowed explicitly.
const options = endpoint.startsWith("http://") ? { allowInsecureConnection: true } : {};

export async function main() {

  const client = new ModelClient(endpoint, new AzureKeyCredential(token), options);

  const response = await client.path("/embeddings").post({
    body: {
      input: ["first phrase", "second phrase", "third phrase"],
      model: modelName
    }
  });

  if (isUnexpected(response)) {
    throw response.body.error;
  }

  for (const item of response.body.data) {
    let length = item.embedding.length;
    console.log(
	  `data[${item.index}]: length=${length}, ` +
	  `[${item.embedding[0]}, ${item.embedding[1]}, ` +
	  `..., ${item.embedding[length - 2]}, ${item.embedding[length -1]}]`);
  }
  console.log(response.body.usage);
  // Changed: which model really embedded (the local server names its own).
  console.log(`model: ${response.body.model}`);
}

main().catch((err) => {
  console.error("The sample encountered an error:", err);
});
