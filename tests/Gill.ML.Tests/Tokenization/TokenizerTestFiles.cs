using System.Text.Encodings.Web;
using System.Text.Json;
using Gill.ML.Tokenization;

namespace Gill.ML.Tests.Tokenization;

/// <summary>Tokenizer folders written for tests: a GPT-2 vocab.json + merges.txt recovered from the GPT-2 data package,
/// and an OPT-shaped folder (four specials first, 50265 entries) over the same merges.</summary>
internal static class TokenizerTestFiles
{
    private static readonly Lazy<(Dictionary<string, int> Vocab, List<string> Merges)> s_gpt2 = new(BuildGpt2);
    private static readonly Lazy<string> s_gpt2Folder = new(() => WriteFolder("gpt2", s_gpt2.Value.Vocab, s_gpt2.Value.Merges, modelType: "gpt2"));
    private static readonly Lazy<string> s_optFolder = new(WriteOptShaped);

    public static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Folder with GPT-2's vocab.json and merges.txt.</summary>
    public static string Gpt2Folder => s_gpt2Folder.Value;

    /// <summary>Folder whose vocab.json puts &lt;s&gt;, &lt;pad&gt;, &lt;/s&gt;, &lt;unk&gt; at 0..3, GPT-2's tokens (without
    /// &lt;|endoftext|&gt;) at their GPT-2 id + 4 and filler entries up to 50265 tokens — OPT's size and specials.</summary>
    public static string OptShapedFolder => s_optFolder.Value;

    public const int OptShift = 4;

    // One folder per test run, removed when the test process exits.
    private static readonly Lazy<string> s_runRoot = new(() =>
    {
        string root = Path.Combine(Path.GetTempPath(), "gill-tok-tests-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return root;
    });

    public static string NewTempDir(string name)
    {
        string dir = Path.Combine(s_runRoot.Value, name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static (Dictionary<string, int>, List<string>) BuildGpt2()
    {
        Dictionary<string, int> vocab = GillTokenizer.ReadGpt2PackageVocabulary();
        // Each multi-byte token is the merge of the two pieces that byte-level BPE restricted to lower ranks leaves.
        var merges = new List<string>();
        foreach (var (token, rank) in vocab.OrderBy(kv => kv.Value))
        {
            if (token.Length < 2)
            {
                continue;
            }
            var parts = token.Select(c => c.ToString()).ToList();
            while (parts.Count > 2)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                {
                    if (vocab.TryGetValue(parts[i] + parts[i + 1], out int r) && r < rank && r < bestRank)
                    {
                        bestRank = r;
                        best = i;
                    }
                }
                if (best < 0)
                {
                    break;
                }
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count == 2)
            {
                merges.Add(parts[0] + " " + parts[1]);
            }
        }
        vocab.Add("<|endoftext|>", 50256);
        return (vocab, merges);
    }

    private static string WriteOptShaped()
    {
        var (gpt2, merges) = s_gpt2.Value;
        var vocab = new Dictionary<string, int> { ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3 };
        foreach (var (token, id) in gpt2)
        {
            if (token != "<|endoftext|>")
            {
                vocab[token] = id + OptShift;
            }
        }
        for (int i = 0; vocab.Count < 50265; i++)
        {
            vocab[$"madeupword{i:0000}"] = vocab.Count;
        }
        string dir = WriteFolder("opt", vocab, merges, modelType: "opt");
        File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"),
            """{"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>"}""");
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": true, "model_max_length": 1000000000000000019884624838656}""");
        return dir;
    }

    public static string WriteFolder(string name, Dictionary<string, int> vocab, List<string> merges, string? modelType)
    {
        string dir = NewTempDir(name);
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab, Json));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n" + string.Join("\n", merges) + "\n");
        if (modelType is not null)
        {
            File.WriteAllText(Path.Combine(dir, "config.json"), $$"""{"model_type": "{{modelType}}"}""");
        }
        return dir;
    }
}
