namespace Gill.ML.Training;

/// <summary>
/// Token sequences and labels of GILL's three training passes (spec §2.1, §3), computed on the CPU from int64 ids.
/// Sequences are <c>[BOS caption [IMG0..r-1] pad…]</c>, right-padded; caption_len counts everything before the padding,
/// so the [IMG] group ends at caption_len − 1. Position 0 always holds BOS and is never taken for padding, so language
/// models whose pad id equals their BOS id (GPT-2: <c>&lt;|endoftext|&gt;</c> is BOS, EOS and pad) train as OPT does.
/// </summary>
public static class GillSequences
{
    /// <summary>
    /// Builds one training sequence as GILL's dataset does: BOS, the caption ids, the r [IMG] ids, truncated to
    /// <paramref name="maxLength"/> (when truncation cuts the [IMG] group, the last r positions are overwritten with it),
    /// then padded. Returns the ids and caption_len.
    /// </summary>
    public static (long[] Ids, long CaptionLength) Build(IReadOnlyList<int> captionIds, int maxLength, int bosTokenId, int padTokenId, IReadOnlyList<int> imgTokenIds)
    {
        ArgumentNullException.ThrowIfNull(captionIds);
        ArgumentNullException.ThrowIfNull(imgTokenIds);
        int r = imgTokenIds.Count;
        if (maxLength < r + 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, $"Must leave room for BOS and {r} [IMG] tokens.");
        var seq = new List<long>(maxLength) { bosTokenId };
        seq.AddRange(captionIds.Select(i => (long)i));
        seq.AddRange(imgTokenIds.Select(i => (long)i));
        if (seq.Count > maxLength)
        {
            seq.RemoveRange(maxLength, seq.Count - maxLength);
            for (int i = 0; i < r; i++) seq[maxLength - r + i] = imgTokenIds[i];
        }
        long captionLength = seq.Count;
        while (seq.Count < maxLength) seq.Add(padTokenId);
        return (seq.ToArray(), captionLength);
    }

    /// <summary>
    /// Labels of the captioning pass over <c>[k visual tokens][tokens]</c>: −100 on the visual prefix and from the first
    /// pad or [IMG] token on; BOS stays a target (predicted from the last visual token). Returns [B, k + T] labels and,
    /// per row, the index of the first masked token (GILL's <c>pad_idx</c>).
    /// </summary>
    public static (long[,] Labels, int[] PadIndex) CaptioningLabels(long[,] tokens, int numVisualTokens, int padTokenId, IReadOnlyList<int> imgTokenIds)
    {
        int b = tokens.GetLength(0), t = tokens.GetLength(1);
        var imgs = new HashSet<long>(imgTokenIds.Select(i => (long)i));
        var labels = new long[b, numVisualTokens + t];
        var pad = new int[b];
        for (int i = 0; i < b; i++)
        {
            for (int j = 0; j < numVisualTokens; j++) labels[i, j] = GillLosses.IgnoreIndex;
            int first = numVisualTokens + t;
            for (int j = 0; j < t; j++)
            {
                long id = tokens[i, j];
                if ((j > 0 && id == padTokenId) || imgs.Contains(id)) { first = numVisualTokens + j; break; }
            }
            for (int j = 0; j < t; j++)
                labels[i, numVisualTokens + j] = numVisualTokens + j < first ? tokens[i, j] : GillLosses.IgnoreIndex;
            pad[i] = first;
        }
        return (labels, pad);
    }

    /// <summary>
    /// Labels of the text-only pass before any concatenation: −100 from the first pad on (the [IMG] tokens are kept);
    /// returns the labels and each row's first pad index. Apply <see cref="MaskNonFirstImgTokens"/> afterwards.
    /// </summary>
    public static (long[,] Labels, int[] PadIndex) TextLabels(long[,] tokens, int padTokenId)
    {
        int b = tokens.GetLength(0), t = tokens.GetLength(1);
        var labels = new long[b, t];
        var pad = new int[b];
        for (int i = 0; i < b; i++)
        {
            int first = t;
            for (int j = 1; j < t; j++) if (tokens[i, j] == padTokenId) { first = j; break; }
            for (int j = 0; j < t; j++) labels[i, j] = j < first ? tokens[i, j] : GillLosses.IgnoreIndex;
            pad[i] = first;
        }
        return (labels, pad);
    }

    /// <summary>
    /// The text-only pass's final masking: everything from the first pad or [IMG1..r-1] token on becomes −100, so the
    /// caption and [IMG0] stay targets (in place).
    /// </summary>
    public static void MaskNonFirstImgTokens(long[,] labels, int padTokenId, IReadOnlyList<int> imgTokenIds)
    {
        var later = new HashSet<long>(imgTokenIds.Skip(1).Select(i => (long)i));
        int b = labels.GetLength(0), t = labels.GetLength(1);
        for (int i = 0; i < b; i++)
        {
            for (int j = 0; j < t; j++)
            {
                long id = labels[i, j];
                if ((j > 0 && id == padTokenId) || later.Contains(id))
                {
                    for (int k = j; k < t; k++) labels[i, k] = GillLosses.IgnoreIndex;
                    break;
                }
            }
        }
    }

    /// <summary>
    /// GILL's example concatenation: rows (2i, 2i+1) become one row
    /// <c>[first[..pad₁], second[..pad₂] without its BOS, first[pad₁..], second[pad₂..]]</c> of length 2T − 1.
    /// Returns, for every output position, the flat source index (row·T + position) to gather from.
    /// </summary>
    /// <param name="padIndex">Per row, the first masked position (<c>pad_idx</c>).</param>
    /// <param name="length">T, the row length (visual prefix included for captioning).</param>
    /// <param name="bosPosition">Where the second row's BOS sits (k for captioning, 0 for the text passes).</param>
    public static long[] ConcatenationGatherIndex(int[] padIndex, int length, int bosPosition)
    {
        int b = padIndex.Length;
        if (b % 2 != 0) throw new ArgumentException("Concatenation needs an even batch size.");
        int outLen = 2 * length - 1;
        var index = new long[b / 2 * outLen];
        int o = 0;
        for (int pair = 0; pair < b / 2; pair++)
        {
            int a = 2 * pair, s = a + 1;
            if (padIndex[s] <= bosPosition)
                throw new ArgumentException($"Concatenation: row {s} has no BOS at position {bosPosition} before its padding.");
            for (int j = 0; j < padIndex[a]; j++) index[o++] = (long)a * length + j;
            for (int j = 0; j < padIndex[s]; j++) if (j != bosPosition) index[o++] = (long)s * length + j;
            for (int j = padIndex[a]; j < length; j++) index[o++] = (long)a * length + j;
            for (int j = padIndex[s]; j < length; j++) index[o++] = (long)s * length + j;
        }
        return index;
    }
}
