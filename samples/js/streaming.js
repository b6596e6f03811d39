import ModelClient from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";
import { createSseStream } from "@azure/core-sse";

// Changed: key and endpoint come from the environment (the local model server by default).
const token = process.env["PHI_API_KEY"] ?? "no-key-needed";
const endpoint = process.env["PHI_ENDPOINT"] ?? "http://127.0.0.1:8765";
// Update your modelname
const modelName = "Phi-3-small-8k-instruct";
// Changed: a plain http:// endpoint (the local server) must be allowed explicitly.
const options = endpoint.startsWith("http://") ? { allowInsecureConnection: true } : {};

export async function main() {

  const client = new ModelClient(endpoint, new AzureKeyCredential(token), options);

  const response = await client.path("/chat/completions").post({
    body: {
      messages: [
        { role: "system", content: "You are a helpful assistant." },
        { role: "user", content: "Give me 5 good reasons why I should exercise every day." },
      ],
      model: modelName,
      stream: true
    }
  }).asNodeStream();

  const stream = response.body;
  if (!stream) {
    throw new Error("The response stream is undefined");
  }

  if (response.status !== "200") {
    stream.destroy();
    throw new Error(`Failed to get chat completions, http operation failed with ${response.status} code`);
  }

  const sseStream = createSseStream(stream);

  for await (const event of sseStream) {
    if (event.data === "[DONE]") {
      return;
    }
    for (const choice of (JSON.parse(event.data)).choices) {
        process.stdout.write(choice.delta?.content ?? ``);
    }
  }
}

main().catch((err) => {
  console.error("The sample encountered an error:", err);
});
