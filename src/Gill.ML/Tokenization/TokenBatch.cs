using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tokenization;

/// <summary>Which side of a sequence receives pad tokens.</summary>
public enum PaddingSide
{
    /// <summary>Pad after the tokens (Hugging Face's default).</summary>
    Right,
    /// <summary>Pad before the tokens (what batched generation with a causal LM needs).</summary>
    Left,
}

/// <summary>Which side of a too long sequence loses tokens. Special tokens (BOS, EOS) are always kept.</summary>
public enum TruncationSide
{
    /// <summary>Drop tokens from the end.</summary>
    Right,
    /// <summary>Drop tokens from the start (after the BOS token).</summary>
    Left,
}

/// <summary>How the sequences of a batch are padded.</summary>
public enum PaddingStrategy
{
    /// <summary>No padding: rows keep their own lengths.</summary>
    None,
    /// <summary>Pad every row to the longest row of the batch.</summary>
    Longest,
    /// <summary>Pad every row to <see cref="BatchEncodingOptions.MaxLength"/>.</summary>
    MaxLength,
}

/// <summary>Padding and truncation settings of a batch encode.</summary>
public sealed record BatchEncodingOptions
{
    /// <summary>Padding strategy; <see cref="PaddingStrategy.Longest"/> by default.</summary>
    public PaddingStrategy Padding { get; init; } = PaddingStrategy.Longest;

    /// <summary>Side that receives the pad tokens.</summary>
    public PaddingSide PaddingSide { get; init; } = PaddingSide.Right;

    /// <summary>Maximum sequence length including special tokens; null for no limit.</summary>
    public int? MaxLength { get; init; }

    /// <summary>Whether sequences longer than <see cref="MaxLength"/> are cut. When false such a sequence is an error.</summary>
    public bool Truncation { get; init; }

    /// <summary>Side that loses tokens when truncating.</summary>
    public TruncationSide TruncationSide { get; init; } = TruncationSide.Right;

    /// <summary>Whether the tokenizer's special tokens (BOS for OPT, BOS/EOS for CLIP) are added; null uses the tokenizer's default.</summary>
    public bool? AddSpecialTokens { get; init; }
}

/// <summary>Token ids and attention masks of a batch of texts.</summary>
public sealed class TokenBatch
{
    internal TokenBatch(long[][] inputIds, long[][] attentionMask)
    {
        InputIds = inputIds;
        AttentionMask = attentionMask;
    }

    /// <summary>Token ids per row (pad positions hold the pad id).</summary>
    public long[][] InputIds { get; }

    /// <summary>1 for real tokens, 0 for pad positions.</summary>
    public long[][] AttentionMask { get; }

    /// <summary>Number of rows.</summary>
    public int Count => InputIds.Length;

    /// <summary>Number of real (non-pad) tokens in each row.</summary>
    public int[] Lengths => AttentionMask.Select(r => (int)r.Sum()).ToArray();

    /// <summary>The input ids as an int64 tensor [B, T].</summary>
    /// <exception cref="InvalidOperationException">The rows have different lengths (encoded without padding).</exception>
    public Tensor InputIdsTensor(Device? device = null) => ToTensor(InputIds, nameof(InputIds), device);

    /// <summary>The attention mask as an int64 tensor [B, T].</summary>
    /// <exception cref="InvalidOperationException">The rows have different lengths (encoded without padding).</exception>
    public Tensor AttentionMaskTensor(Device? device = null) => ToTensor(AttentionMask, nameof(AttentionMask), device);

    private static Tensor ToTensor(long[][] rows, string name, Device? device)
    {
        int b = rows.Length;
        int t = b == 0 ? 0 : rows[0].Length;
        var flat = new long[b * t];
        for (int i = 0; i < b; i++)
        {
            if (rows[i].Length != t)
            {
                throw new InvalidOperationException(
                    $"{name} row {i} has {rows[i].Length} tokens but row 0 has {t}; encode with padding to build a [B, T] tensor.");
            }
            Array.Copy(rows[i], 0, flat, i * t, t);
        }
        return torch.tensor(flat, new long[] { b, t }, dtype: ScalarType.Int64, device: device);
    }

    /// <summary>Assembles prefix + content + suffix per row with truncation and padding.</summary>
    internal static TokenBatch Build(
        IReadOnlyList<IReadOnlyList<int>> contents,
        IReadOnlyList<int> prefix,
        IReadOnlyList<int> suffix,
        BatchEncodingOptions options,
        int? padTokenId,
        string padDescription)
    {
        if (options.MaxLength is int m && m <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxLength must be positive, got {m}.");
        }
        if (options.Padding == PaddingStrategy.MaxLength && options.MaxLength is null)
        {
            throw new ArgumentException("Padding to MaxLength needs BatchEncodingOptions.MaxLength.", nameof(options));
        }
        if (options.Padding != PaddingStrategy.None && padTokenId is null)
        {
            throw new InvalidOperationException($"Padding was requested but {padDescription} has no pad token; set one or encode with PaddingStrategy.None.");
        }

        int special = prefix.Count + suffix.Count;
        var rows = new List<int>[contents.Count];
        for (int i = 0; i < contents.Count; i++)
        {
            IReadOnlyList<int> content = contents[i];
            int keep = content.Count;
            if (options.MaxLength is int max && special + content.Count > max)
            {
                if (!options.Truncation)
                {
                    throw new InvalidOperationException(
                        $"Text {i} encodes to {special + content.Count} tokens, more than the maximum length {max}; enable truncation or raise MaxLength.");
                }
                keep = max - special;
                if (keep < 0)
                {
                    throw new InvalidOperationException($"MaxLength {max} cannot hold the {special} special tokens of a sequence.");
                }
            }
            int start = options.TruncationSide == TruncationSide.Left ? content.Count - keep : 0;
            var row = new List<int>(special + keep);
            row.AddRange(prefix);
            for (int j = 0; j < keep; j++)
            {
                row.Add(content[start + j]);
            }
            row.AddRange(suffix);
            rows[i] = row;
        }

        int target = options.Padding switch
        {
            PaddingStrategy.MaxLength => options.MaxLength!.Value,
            PaddingStrategy.Longest => rows.Length == 0 ? 0 : rows.Max(r => r.Count),
            _ => 0,
        };

        var ids = new long[rows.Length][];
        var mask = new long[rows.Length][];
        for (int i = 0; i < rows.Length; i++)
        {
            List<int> row = rows[i];
            int length = Math.Max(target, row.Count);
            int pad = length - row.Count;
            int offset = options.PaddingSide == PaddingSide.Left ? pad : 0;
            ids[i] = new long[length];
            mask[i] = new long[length];
            if (pad > 0)
            {
                Array.Fill(ids[i], padTokenId!.Value);
            }
            for (int j = 0; j < row.Count; j++)
            {
                ids[i][offset + j] = row[j];
                mask[i][offset + j] = 1;
            }
        }
        return new TokenBatch(ids, mask);
    }
}
