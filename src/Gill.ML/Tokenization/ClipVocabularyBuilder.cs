using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Gill.ML.Tokenization;

/// <summary>
/// Builds CLIP-style tokenizer files (vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json) from a
/// corpus, so that a small CLIP trained on that corpus has real tokenizer files that <see cref="ClipTokenizer"/> loads.
/// </summary>
/// <remarks>
/// The vocabulary is word level: every word of the corpus (after CLIP's cleanup and pre-tokenization) becomes a single
/// token "word&lt;/w&gt;". Like OpenAI CLIP's vocabulary it starts with the 256 byte characters and the same 256 with
/// "&lt;/w&gt;" (so any text still encodes), continues with one entry per merge and ends with "&lt;|startoftext|&gt;"
/// and "&lt;|endoftext|&gt;". Words are taken in order of decreasing frequency; each adds the merges that join the
/// pieces the earlier merges leave it in, from the left. Later merges rank after all earlier ones, so they never
/// change how an earlier word is merged.
/// </remarks>
public static class ClipVocabularyBuilder
{
    /// <summary>Built vocabulary: token → id in id order, and the merges in rank order ("left right").</summary>
    public sealed record Result(IReadOnlyList<KeyValuePair<string, int>> Vocabulary, IReadOnlyList<string> Merges, IReadOnlyList<string> Words);

    /// <summary>Builds the vocabulary and merges of a corpus.</summary>
    public static Result Build(IEnumerable<string> corpus, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string text in corpus)
        {
            cancellationToken.ThrowIfCancellationRequested();
            foreach (System.Text.RegularExpressions.Match m in ClipTokenizer.PreTokenizerRegex.Matches(ClipTokenizer.CleanText(text ?? "")))
            {
                if (m.Value == ClipTokenizer.StartOfText || m.Value == ClipTokenizer.EndOfText)
                {
                    continue;
                }
                string word = ByteLevelAlphabet.Encode(m.Value);
                counts[word] = counts.TryGetValue(word, out int c) ? c + 1 : 1;
            }
        }
        string[] words = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key).ToArray();

        var vocab = new List<string>();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        void AddToken(string token)
        {
            if (!ids.ContainsKey(token))
            {
                ids[token] = vocab.Count;
                vocab.Add(token);
            }
        }
        foreach (char c in ByteLevelAlphabet.CharactersInVocabularyOrder)
        {
            AddToken(c.ToString());
        }
        foreach (char c in ByteLevelAlphabet.CharactersInVocabularyOrder)
        {
            AddToken(c + ClipTokenizer.EndOfWordSuffix);
        }

        var ranks = new Dictionary<(string, string), int>();
        var merges = new List<string>();
        foreach (string word in words)
        {
            cancellationToken.ThrowIfCancellationRequested();
            List<string> pieces = Merge(word, ranks);
            string prefix = pieces[0];
            for (int i = 1; i < pieces.Count; i++)
            {
                if (!ranks.ContainsKey((prefix, pieces[i])))
                {
                    ranks[(prefix, pieces[i])] = merges.Count;
                    merges.Add(prefix + " " + pieces[i]);
                }
                prefix += pieces[i];
                AddToken(prefix);
            }
        }
        if (merges.Count > ClipTokenizer.MaxMerges)
        {
            throw new InvalidOperationException(
                $"The corpus needs {merges.Count} merges for its {words.Length} distinct words; a CLIP tokenizer reads at most {ClipTokenizer.MaxMerges}.");
        }
        foreach (string word in words)
        {
            List<string> pieces = Merge(word, ranks);
            if (pieces.Count != 1)
            {
                throw new InvalidOperationException($"Corpus word '{word}' merges to {pieces.Count} tokens instead of one.");
            }
        }
        AddToken(ClipTokenizer.StartOfText);
        AddToken(ClipTokenizer.EndOfText);

        return new Result(vocab.Select((t, i) => new KeyValuePair<string, int>(t, i)).ToList(), merges, words);
    }

    /// <summary>The BPE merge loop of CLIP: the last character carries "&lt;/w&gt;", the lowest-ranked adjacent pair is
    /// merged everywhere, until no pair has a rank.</summary>
    private static List<string> Merge(string word, Dictionary<(string, string), int> ranks)
    {
        var symbols = new List<string>(word.Length);
        for (int i = 0; i < word.Length; i++)
        {
            string s = word[i].ToString();
            symbols.Add(i == word.Length - 1 ? s + ClipTokenizer.EndOfWordSuffix : s);
        }
        while (symbols.Count > 1)
        {
            int best = int.MaxValue;
            (string, string) bestPair = default;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (ranks.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < best)
                {
                    best = r;
                    bestPair = (symbols[i], symbols[i + 1]);
                }
            }
            if (best == int.MaxValue)
            {
                break;
            }
            var merged = new List<string>(symbols.Count);
            for (int i = 0; i < symbols.Count; i++)
            {
                if (i + 1 < symbols.Count && symbols[i] == bestPair.Item1 && symbols[i + 1] == bestPair.Item2)
                {
                    merged.Add(bestPair.Item1 + bestPair.Item2);
                    i++;
                }
                else
                {
                    merged.Add(symbols[i]);
                }
            }
            symbols = merged;
        }
        return symbols;
    }

    /// <summary>
    /// Builds the vocabulary of a corpus and writes vocab.json, merges.txt, special_tokens_map.json and
    /// tokenizer_config.json (pad "&lt;|endoftext|&gt;" as in Stable Diffusion) into <paramref name="folder"/>, each atomically.
    /// </summary>
    public static Result BuildAndSave(IEnumerable<string> corpus, string folder, int modelMaxLength = ClipTokenizer.DefaultModelMaxLength, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (modelMaxLength < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(modelMaxLength), $"modelMaxLength must hold BOS and EOS, got {modelMaxLength}.");
        }
        Result result = Build(corpus, cancellationToken);
        Directory.CreateDirectory(folder);
        var json = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        var vocabObject = new Dictionary<string, int>(result.Vocabulary);
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.VocabFileName), JsonSerializer.Serialize(vocabObject, json));
        var merges = new StringBuilder("#version: 0.2\n");
        foreach (string m in result.Merges)
        {
            merges.Append(m).Append('\n');
        }
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.MergesFileName), merges.ToString());
        var special = new Dictionary<string, string>
        {
            ["bos_token"] = ClipTokenizer.StartOfText,
            ["eos_token"] = ClipTokenizer.EndOfText,
            ["unk_token"] = ClipTokenizer.EndOfText,
            ["pad_token"] = ClipTokenizer.EndOfText,
        };
        var indented = new JsonSerializerOptions(json) { WriteIndented = true };
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.SpecialTokensMapFileName), JsonSerializer.Serialize(special, indented));
        var config = new Dictionary<string, object>(special.ToDictionary(kv => kv.Key, kv => (object)kv.Value))
        {
            ["model_max_length"] = modelMaxLength,
            ["do_lower_case"] = true,
            ["tokenizer_class"] = "CLIPTokenizer",
        };
        TokenizerFiles.WriteAllTextAtomic(Path.Combine(folder, TokenizerFiles.TokenizerConfigFileName), JsonSerializer.Serialize(config, indented));
        return result;
    }
}
