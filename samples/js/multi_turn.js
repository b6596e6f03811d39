import ModelClient from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";

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
        { role: "user", content: "What is the capital of France?" },
        { role: "assistant", content: "The capital of France is Paris." },
        { role: "user", content: "What about Spain?" },
      ],
      model: modelName,
    }
  });

  if (response.status !== "200") {
    throw response.body.error;
  }

  for (const choice of response.body.choices) {
    console.log(choice.message.content);
  }
}

main().catch((err) => {
  console.error("The sample encountered an error:", err);
});
