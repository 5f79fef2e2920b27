using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Gill.ML.Tokenization;

/// <summary>Reading of the Hugging Face tokenizer side files and atomic writing.</summary>
internal static class TokenizerFiles
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    public const string SpecialTokensMapFileName = "special_tokens_map.json";
    public const string TokenizerConfigFileName = "tokenizer_config.json";
    public const string ConfigFileName = "config.json";
    public const string AddedTokensFileName = "added_tokens.json";

    /// <summary>Reads a JSON object file, or null when the file does not exist.</summary>
    public static JsonObject? ReadObject(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new InvalidDataException($"'{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>A special token entry: either a plain string or an object with a "content" member.</summary>
    public static string? TokenContent(JsonObject? obj, string key)
    {
        if (obj is null || !obj.TryGetPropertyValue(key, out JsonNode? node) || node is null)
        {
            return null;
        }
        if (node is JsonValue v && v.TryGetValue(out string? s))
        {
            return s;
        }
        if (node is JsonObject o && o.TryGetPropertyValue("content", out JsonNode? c) && c is JsonValue cv && cv.TryGetValue(out string? content))
        {
            return content;
        }
        return null;
    }

    public static bool? Bool(JsonObject? obj, string key)
        => obj is not null && obj.TryGetPropertyValue(key, out JsonNode? n) && n is JsonValue v && v.TryGetValue(out bool b) ? b : null;

    public static long? Int(JsonObject? obj, string key)
        => obj is not null && obj.TryGetPropertyValue(key, out JsonNode? n) && n is JsonValue v && v.TryGetValue(out long b) ? b : null;

    public static string? String(JsonObject? obj, string key)
        => obj is not null && obj.TryGetPropertyValue(key, out JsonNode? n) && n is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    /// <summary>Reads a vocab.json (token → id) file.</summary>
    public static Dictionary<string, int> ReadVocabulary(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Tokenizer vocabulary file '{path}' does not exist.", path);
        }
        try
        {
            var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(path))
                ?? throw new InvalidDataException($"'{path}' holds no vocabulary.");
            if (vocab.Count == 0)
            {
                throw new InvalidDataException($"Tokenizer vocabulary file '{path}' is empty.");
            }
            return vocab;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Tokenizer vocabulary file '{path}' is not a JSON object of token → id: {e.Message}", e);
        }
    }

    /// <summary>Reads the merge lines of a merges.txt file (the "#version" header and blank lines skipped), checking
    /// that each line is a pair.</summary>
    public static List<string> ReadMerges(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Tokenizer merges file '{path}' does not exist.", path);
        }
        var merges = new List<string>();
        int lineNumber = 0;
        foreach (string raw in File.ReadLines(path))
        {
            lineNumber++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal)))
            {
                continue;
            }
            int space = line.IndexOf(' ');
            if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
            {
                throw new InvalidDataException($"Tokenizer merges file '{path}' line {lineNumber} is not a pair of tokens separated by one space: '{line}'.");
            }
            merges.Add(line);
        }
        return merges;
    }

    /// <summary>Writes text through a temporary file and a rename so readers never see a partial file.</summary>
    public static void WriteAllTextAtomic(string path, string text)
    {
        string full = Path.GetFullPath(path);
        string? dir = Path.GetDirectoryName(full);
        if (!string.IsNullOrEmpty(dir))
        {
            Directory.CreateDirectory(dir);
        }
        string tmp = full + "." + Guid.NewGuid().ToString("N") + ".tmp";
        try
        {
            File.WriteAllText(tmp, text, new UTF8Encoding(false));
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp))
            {
                File.Delete(tmp);
            }
        }
    }
}
