using System.Text.Json.Serialization;

namespace Gill.ML.World;

/// <summary>One object of a scene: what it is, its colour, its size and where it is.</summary>
/// <param name="Shape">The shape.</param>
/// <param name="Color">The colour.</param>
/// <param name="Size">The size.</param>
/// <param name="Position">The position.</param>
public sealed record ShapesObject(
    [property: JsonPropertyName("shape")] ShapeKind Shape,
    [property: JsonPropertyName("color")] ShapeColor Color,
    [property: JsonPropertyName("size")] ShapeSize Size,
    [property: JsonPropertyName("position")] ShapePosition Position)
{
    /// <summary>The (colour, shape) composition of this object.</summary>
    [JsonIgnore]
    public ShapesPair Pair => new(Color, Shape);

    /// <summary>"small red circle at the left".</summary>
    public override string ToString() =>
        $"{ShapesWords.Size(Size)} {ShapesWords.Color(Color)} {ShapesWords.Shape(Shape)} {ShapesWords.Position(Position)}";
}

/// <summary>
/// The structured attributes of one image: one or two objects on a background. Two objects are always laid out
/// left/right or top/bottom (the first object is the left or top one).
/// </summary>
/// <param name="Background">The background colour.</param>
/// <param name="Objects">One or two objects, drawn in order.</param>
public sealed record ShapesScene(
    [property: JsonPropertyName("background")] ShapesBackground Background,
    [property: JsonPropertyName("objects")] IReadOnlyList<ShapesObject> Objects)
{
    /// <summary>Structural equality (the object lists are compared element by element).</summary>
    public bool Equals(ShapesScene? other) =>
        other is not null && Background == other.Background && Objects.SequenceEqual(other.Objects);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Background);
        foreach (var o in Objects) h.Add(o);
        return h.ToHashCode();
    }

    /// <summary>"small red circle at the left; large blue square on the right (black)".</summary>
    public override string ToString() =>
        $"{string.Join("; ", Objects)} ({ShapesWords.Background(Background)})";
}

/// <summary>
/// A small deterministic random source (SplitMix64) whose sequence is fixed by this library, not by the runtime,
/// so a world generated from a seed is the same on every .NET version.
/// </summary>
internal sealed class WorldRandom
{
    private ulong _state;

    public WorldRandom(ulong seed) => _state = seed;

    /// <summary>An independent stream for a named part of the world (e.g. "images/train").</summary>
    public static WorldRandom For(int seed, string stream)
    {
        ulong h = 14695981039346656037UL; // FNV-1a over the stream name
        foreach (var ch in stream) { h ^= ch; h *= 1099511628211UL; }
        return new WorldRandom(h ^ ((ulong)(uint)seed * 0x9E3779B97F4A7C15UL));
    }

    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform integer in [0, maxExclusive).</summary>
    public int Next(int maxExclusive)
    {
        if (maxExclusive <= 0) throw new ArgumentOutOfRangeException(nameof(maxExclusive));
        return (int)(NextUInt64() % (ulong)maxExclusive);
    }

    /// <summary>Uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    public T Pick<T>(IReadOnlyList<T> items) => items[Next(items.Count)];

    public bool Chance(double p) => NextDouble() < p;

    public void Shuffle<T>(IList<T> items)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
