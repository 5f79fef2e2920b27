using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Gill.ML.Tokenization;

namespace Gill.ML.World.Pretraining;

/// <summary>
/// Writes the GPT-2 tokenizer of the data package (<see cref="GillTokenizer.Gpt2"/>) as Hugging Face GPT-2 tokenizer
/// files (vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json), so that a checkpoint folder trained
/// with GPT-2 token ids loads its tokenizer with <see cref="GillTokenizer.FromFolder"/>.
/// </summary>
internal static class Gpt2TokenizerExport
{
    /// <summary>The GPT-2 end-of-text token (also used as BOS, EOS, UNK and padding).</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>Its id in the GPT-2 vocabulary.</summary>
    public const int EndOfTextId = 50256;

    private static readonly Lazy<(Dictionary<string, int> Vocab, List<string> Merges)> s_files = new(Build);

    /// <summary>Writes the four tokenizer files into <paramref name="folder"/> (each atomically).</summary>
    /// <param name="folder">The checkpoint folder.</param>
    /// <param name="addBosToken">Value of <c>add_bos_token</c> in tokenizer_config.json.</param>
    public static void Save(string folder, bool addBosToken)
    {
        var (vocab, merges) = s_files.Value;
        Directory.CreateDirectory(folder);
        var json = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.VocabFileName),
            JsonSerializer.Serialize(vocab.OrderBy(kv => kv.Value).ToDictionary(kv => kv.Key, kv => kv.Value), json));
        var sb = new StringBuilder("#version: 0.2\n");
        foreach (var m in merges) sb.Append(m).Append('\n');
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.MergesFileName), sb.ToString());
        var special = new Dictionary<string, string> { ["bos_token"] = EndOfText, ["eos_token"] = EndOfText, ["unk_token"] = EndOfText, ["pad_token"] = EndOfText };
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.SpecialTokensMapFileName), JsonSerializer.Serialize(special, json));
        var config = new Dictionary<string, object>
        {
            ["tokenizer_class"] = "GPT2Tokenizer", ["bos_token"] = EndOfText, ["eos_token"] = EndOfText, ["unk_token"] = EndOfText,
            ["pad_token"] = EndOfText, ["add_bos_token"] = addBosToken, ["model_max_length"] = 1024,
        };
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.TokenizerConfigFileName), JsonSerializer.Serialize(config, json));
    }

    /// <summary>
    /// Recovers the merge list from the ranks: each token of two or more bytes is produced by the one merge that BPE,
    /// restricted to ranks below the token's own, ends with. Merges are listed in the order of the tokens they make.
    /// </summary>
    private static (Dictionary<string, int>, List<string>) Build()
    {
        var ranks = GillTokenizer.ReadGpt2PackageVocabulary();
        var merges = new List<string>(ranks.Count);
        foreach (var (token, rank) in ranks.OrderBy(kv => kv.Value))
        {
            if (token.Length < 2) continue;
            var parts = token.Select(c => c.ToString()).ToList();
            while (parts.Count > 2)
            {
                int best = int.MaxValue, at = -1;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < rank && r < best) (best, at) = (r, i);
                if (at < 0) break;
                parts[at] += parts[at + 1];
                parts.RemoveAt(at + 1);
            }
            if (parts.Count != 2)
                throw new InvalidDataException($"GPT-2 token {rank} ('{token}') cannot be split into two lower-ranked tokens; the data package's ranks are not a BPE vocabulary.");
            merges.Add(parts[0] + " " + parts[1]);
        }
        var vocab = new Dictionary<string, int>(ranks, StringComparer.Ordinal);
        if (!vocab.ContainsKey(EndOfText)) vocab[EndOfText] = EndOfTextId;
        return (vocab, merges);
    }
}
